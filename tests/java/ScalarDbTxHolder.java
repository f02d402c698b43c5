// A ScalarDB client that holds transactions open on a ScalarDB server, so a test
// can pause the server while a real transaction is in flight. It uses ScalarDB's
// own gRPC transaction manager (scalar.db.transaction_manager=grpc).
//
//   java -cp '.cache/jars/scalardb-server/*:.cache/jars/scalardb-classes' ScalarDbTxHolder PORT
//
// Prints "ready" once connected, then reads one command a line from stdin:
//   coordinator  create the coordinator tables (if missing) -> "created"
//   begin        begin a transaction                        -> "begun <id>"
//   commit       commit the oldest open transaction         -> "committed <id>"
//   abort        abort the oldest open transaction          -> "aborted <id>"
// Several transactions may be open at once. ScalarDB's client retries a begin
// that the paused server rejects (UNAVAILABLE "the server is paused") with
// backoff, logging each retry to stdout as a WARN line.
// A failure prints "error <exception class>: <message>" (with the root cause's
// message, which carries the gRPC status, e.g. UNAVAILABLE: the server is paused).
// End of file of stdin aborts the open transactions and exits.

import com.scalar.db.api.DistributedTransaction;
import com.scalar.db.api.DistributedTransactionAdmin;
import com.scalar.db.api.DistributedTransactionManager;
import com.scalar.db.service.TransactionFactory;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Properties;

public final class ScalarDbTxHolder {
  private static void say(String line) {
    System.out.println(line);
    System.out.flush();
  }

  private static String describe(Throwable e) {
    Throwable root = e;
    while (root.getCause() != null && root.getCause() != root) {
      root = root.getCause();
    }
    String message = e.getClass().getSimpleName() + ": " + e.getMessage();
    if (root != e) {
      message += " | " + root.getClass().getSimpleName() + ": " + root.getMessage();
    }
    return message.replace('\n', ' ');
  }

  public static void main(String[] args) throws IOException {
    if (args.length != 1) {
      System.err.println("usage: ScalarDbTxHolder PORT");
      System.exit(2);
    }
    Properties props = new Properties();
    props.setProperty("scalar.db.transaction_manager", "grpc");
    props.setProperty("scalar.db.contact_points", "127.0.0.1");
    props.setProperty("scalar.db.contact_port", args[0]);
    TransactionFactory factory = TransactionFactory.create(props);
    DistributedTransactionManager manager = factory.getTransactionManager();
    Deque<DistributedTransaction> open = new ArrayDeque<>();
    say("ready");
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      String command = line.trim();
      try {
        switch (command) {
          case "coordinator":
            DistributedTransactionAdmin admin = factory.getTransactionAdmin();
            try {
              admin.createCoordinatorTables(true);
            } finally {
              admin.close();
            }
            say("created");
            break;
          case "begin":
            DistributedTransaction tx = manager.begin();
            open.addLast(tx);
            say("begun " + tx.getId());
            break;
          case "commit":
          case "abort":
            DistributedTransaction oldest = open.pollFirst();
            if (oldest == null) {
              say("error IllegalStateException: no open transaction");
            } else if (command.equals("commit")) {
              oldest.commit();
              say("committed " + oldest.getId());
            } else {
              oldest.abort();
              say("aborted " + oldest.getId());
            }
            break;
          case "":
            break;
          default:
            say("error IllegalArgumentException: unknown command " + command);
        }
      } catch (Exception e) {
        say("error " + describe(e));
      }
    }
    for (DistributedTransaction tx : open) {
      try {
        tx.abort();
      } catch (Exception e) {
        // exiting anyway
      }
    }
    manager.close();
    System.exit(0);
  }
}
