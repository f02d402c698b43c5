// A tiny rpc.Admin server built on the generated classes of the real Java
// scalar-admin jar (com.scalar.admin.rpc.AdminGrpc), so that txbackup's Python
// client is tested against a Java gRPC peer that decodes our messages with the
// reference protobuf classes.
//
//   java -cp '.cache/jars/admin/*:.cache/jars/peer-classes' AdminPeerServer PORT [options]
//
// PORT 0 picks a free port. Binds 127.0.0.1 only. Prints "listening <port>" once
// it accepts calls, then one "event ..." line per call received:
//   event Pause wait_outstanding=<bool> max_pause_wait_time=<ms|unset>
//   event Unpause
//   event CheckPaused paused=<bool>          (or "event CheckPaused unimplemented")
// Options:
//   --pause-delay-ms N     Pause waits N ms before answering (a slow drain).
//   --fail-pause CODE      Pause answers with gRPC status CODE (e.g. FAILED_PRECONDITION)
//                          and leaves the server unpaused, as ScalarDL does when the
//                          in-flight requests do not drain in time.
//   --no-check-paused      CheckPaused answers UNIMPLEMENTED, like an older server whose
//                          proto has Stats instead of CheckPaused (ScalarDB server 3.x).
// Stops on SIGTERM/SIGINT, or when its standard input reaches end of file (so a test
// process that dies does not leave it behind).

import com.google.protobuf.Empty;
import com.scalar.admin.rpc.AdminGrpc;
import com.scalar.admin.rpc.CheckPausedResponse;
import com.scalar.admin.rpc.PauseRequest;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.TimeUnit;

public final class AdminPeerServer extends AdminGrpc.AdminImplBase {
  private volatile boolean paused;
  private final long pauseDelayMs;
  private final Status.Code failPause;
  private final boolean checkPausedImplemented;

  AdminPeerServer(long pauseDelayMs, Status.Code failPause, boolean checkPausedImplemented) {
    this.pauseDelayMs = pauseDelayMs;
    this.failPause = failPause;
    this.checkPausedImplemented = checkPausedImplemented;
  }

  private static synchronized void say(String line) {
    System.out.println(line);
    System.out.flush();
  }

  @Override
  public void pause(PauseRequest request, StreamObserver<Empty> responseObserver) {
    say(
        "event Pause wait_outstanding="
            + request.getWaitOutstanding()
            + " max_pause_wait_time="
            + (request.hasMaxPauseWaitTime()
                ? Long.toString(request.getMaxPauseWaitTime())
                : "unset"));
    if (pauseDelayMs > 0) {
      try {
        Thread.sleep(pauseDelayMs);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    if (failPause != null) {
      responseObserver.onError(
          Status.fromCode(failPause)
              .withDescription("AdminPeerServer told to fail Pause")
              .asRuntimeException());
      return;
    }
    paused = true;
    responseObserver.onNext(Empty.getDefaultInstance());
    responseObserver.onCompleted();
  }

  @Override
  public void unpause(Empty request, StreamObserver<Empty> responseObserver) {
    say("event Unpause");
    paused = false;
    responseObserver.onNext(Empty.getDefaultInstance());
    responseObserver.onCompleted();
  }

  @Override
  public void checkPaused(Empty request, StreamObserver<CheckPausedResponse> responseObserver) {
    if (!checkPausedImplemented) {
      say("event CheckPaused unimplemented");
      responseObserver.onError(
          Status.UNIMPLEMENTED
              .withDescription("Method not found: rpc.Admin/CheckPaused")
              .asRuntimeException());
      return;
    }
    boolean now = paused;
    say("event CheckPaused paused=" + now);
    responseObserver.onNext(CheckPausedResponse.newBuilder().setPaused(now).build());
    responseObserver.onCompleted();
  }

  private static void usage(String why) {
    System.err.println("AdminPeerServer: " + why);
    System.err.println(
        "usage: AdminPeerServer PORT [--pause-delay-ms N] [--fail-pause CODE] [--no-check-paused]");
    System.exit(2);
  }

  public static void main(String[] args) throws IOException, InterruptedException {
    if (args.length < 1) {
      usage("missing PORT");
    }
    int port = 0;
    try {
      port = Integer.parseInt(args[0]);
    } catch (NumberFormatException e) {
      usage("bad PORT " + args[0]);
    }
    long pauseDelayMs = 0;
    Status.Code failPause = null;
    boolean checkPaused = true;
    for (int i = 1; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--no-check-paused")) {
        checkPaused = false;
      } else if (a.equals("--pause-delay-ms") && i + 1 < args.length) {
        pauseDelayMs = Long.parseLong(args[++i]);
      } else if (a.equals("--fail-pause") && i + 1 < args.length) {
        failPause = Status.Code.valueOf(args[++i]);
      } else {
        usage("unknown option " + a);
      }
    }

    final Server server =
        NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", port))
            .addService(new AdminPeerServer(pauseDelayMs, failPause, checkPaused))
            .build()
            .start();
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  server.shutdownNow();
                  try {
                    server.awaitTermination(5, TimeUnit.SECONDS);
                  } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                  }
                }));
    Thread stdinWatch =
        new Thread(
            () -> {
              InputStream in = System.in;
              try {
                while (in.read() != -1) {
                  // ignore input; only end of file matters
                }
              } catch (IOException e) {
                // treat a broken stdin as end of file
              }
              System.exit(0);
            },
            "stdin-watch");
    stdinWatch.setDaemon(true);
    stdinWatch.start();

    say("listening " + server.getPort());
    server.awaitTermination();
  }
}
