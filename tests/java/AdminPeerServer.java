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
//   --fail-reason REASON   with --fail-pause: the error carries a google.rpc.ErrorInfo with this
//                          reason (domain com.scalar.db.cluster.admin) in the
//                          grpc-status-details-bin trailer, built with grpc-java's StatusProto
//                          as ScalarDB Cluster 3.19 does (e.g. TIMED_OUT_STILL_PAUSED).
//   --abort-pause N        the first N Pause calls answer ABORTED with reason PAUSE_IN_PROGRESS
//                          (3.19: a race lost to another admin request; retryable).
//   --paused               start paused, as if by an earlier pause of someone else.
//   --lie-paused           Pause answers OK but the server stays unpaused (the race fixed in
//                          ScalarDB Cluster 3.15.9 / 3.16.6 / 3.17.4 / 3.18.1).
// Stops on SIGTERM/SIGINT, or when its standard input reaches end of file (so a test
// process that dies does not leave it behind).

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.Empty;
import com.scalar.admin.rpc.AdminGrpc;
import com.scalar.admin.rpc.CheckPausedResponse;
import com.scalar.admin.rpc.PauseRequest;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

public final class AdminPeerServer extends AdminGrpc.AdminImplBase {
  static final String CLUSTER_DOMAIN = "com.scalar.db.cluster.admin";

  private volatile boolean paused;
  private final long pauseDelayMs;
  private final Status.Code failPause;
  private final boolean checkPausedImplemented;
  String failReason;
  int abortPauses;
  boolean liePaused;
  private final AtomicInteger pauseCalls = new AtomicInteger();

  AdminPeerServer(long pauseDelayMs, Status.Code failPause, boolean checkPausedImplemented) {
    this.pauseDelayMs = pauseDelayMs;
    this.failPause = failPause;
    this.checkPausedImplemented = checkPausedImplemented;
  }

  // google.rpc.ErrorInfo {string reason = 1; string domain = 2;}, encoded by hand: the
  // proto-google-common-protos jar the scalar-admin client brings predates ErrorInfo.
  private static Any errorInfo(String reason) {
    try {
      ByteString.Output bytes = ByteString.newOutput();
      CodedOutputStream out = CodedOutputStream.newInstance(bytes);
      out.writeString(1, reason);
      out.writeString(2, CLUSTER_DOMAIN);
      out.flush();
      return Any.newBuilder()
          .setTypeUrl("type.googleapis.com/google.rpc.ErrorInfo")
          .setValue(bytes.toByteString())
          .build();
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
  }

  private static io.grpc.StatusRuntimeException withReason(Status.Code code, String text, String reason) {
    return StatusProto.toStatusRuntimeException(
        com.google.rpc.Status.newBuilder()
            .setCode(code.value())
            .setMessage(text)
            .addDetails(errorInfo(reason))
            .build());
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
    if (pauseCalls.incrementAndGet() <= abortPauses) {
      responseObserver.onError(
          withReason(
              Status.Code.ABORTED, "Pause did not start: another pause request is in progress",
              "PAUSE_IN_PROGRESS"));
      return;
    }
    if (failPause != null && failReason != null) {
      responseObserver.onError(withReason(failPause, "AdminPeerServer told to fail Pause", failReason));
      return;
    }
    if (failPause != null) {
      responseObserver.onError(
          Status.fromCode(failPause)
              .withDescription("AdminPeerServer told to fail Pause")
              .asRuntimeException());
      return;
    }
    if (!liePaused) {
      paused = true;
    }
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
        "usage: AdminPeerServer PORT [--pause-delay-ms N] [--fail-pause CODE] [--no-check-paused]"
            + " [--fail-reason REASON] [--abort-pause N] [--paused] [--lie-paused]");
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
    String failReason = null;
    int abortPauses = 0;
    boolean startPaused = false;
    boolean liePaused = false;
    for (int i = 1; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--no-check-paused")) {
        checkPaused = false;
      } else if (a.equals("--paused")) {
        startPaused = true;
      } else if (a.equals("--lie-paused")) {
        liePaused = true;
      } else if (a.equals("--fail-reason") && i + 1 < args.length) {
        failReason = args[++i];
      } else if (a.equals("--abort-pause") && i + 1 < args.length) {
        abortPauses = Integer.parseInt(args[++i]);
      } else if (a.equals("--pause-delay-ms") && i + 1 < args.length) {
        pauseDelayMs = Long.parseLong(args[++i]);
      } else if (a.equals("--fail-pause") && i + 1 < args.length) {
        failPause = Status.Code.valueOf(args[++i]);
      } else {
        usage("unknown option " + a);
      }
    }

    AdminPeerServer peer = new AdminPeerServer(pauseDelayMs, failPause, checkPaused);
    peer.failReason = failReason;
    peer.abortPauses = abortPauses;
    peer.liePaused = liePaused;
    peer.paused = startPaused;
    final Server server =
        NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", port))
            .addService(peer)
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
