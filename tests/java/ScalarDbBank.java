// A bank on ScalarDB for tests/e2e/test_scalardb_multistorage.py: accounts split across two
// namespaces (bank_a, bank_b: two storages of a multi-storage ScalarDB), money moved between
// them by consensus-commit transactions.
//
//   java -cp '.cache/jars/scalardb-server/*:.cache/jars/scalardb-bank-classes' ScalarDbBank PROPS
//
// PROPS is a ScalarDB properties file: scalar.db.transaction_manager=grpc (through a ScalarDB
// server: the load) or consensus-commit over the storages themselves (reading restored copies).
// Prints "ready" once connected, then reads one command a line from stdin:
//   setup N BALANCE  create the coordinator tables, both namespaces and their accounts tables
//                    through ScalarDB's Admin API, and N accounts on each side holding BALANCE
//                    -> "done"
//   start THREADS    THREADS workers each run transfers in a loop: one account of bank_a and
//                    one of bank_b (at random), a random amount one way or the other, both
//                    rows read and written in one transaction; every account also counts the
//                    transfers it took part in -> "started"
//   stop             stop the workers -> "stopped committed=C conflicts=K unknown=U errors=E
//                    last=<last error>"  (conflicts: aborted and retried later; unknown: commit
//                    outcome unknown (UnknownTransactionStatusException); errors: anything else)
//   count            -> "count C": transfers committed so far
//   books N [PROPS2] read every account (ids 0..N-1 on each side) in ONE transaction, retried
//                    while a record is left uncommitted (ScalarDB's lazy recovery resolves it on
//                    read, rolling forward or back after looking at the coordinator; a record
//                    without a coordinator row is aborted only once its transaction expired,
//                    15 s after it was prepared) -> "books sum=S transfers_a=TA transfers_b=TB
//                    missing=M tries=T". With PROPS2, through a new transaction manager made
//                    from that file (e.g. a restored copy), closed afterwards.
// Consistent books: sum == 2 * N * BALANCE and transfers_a == transfers_b (each transfer is
// counted once on each side: a transfer committed on one side only shows as a difference).
// A failure prints "error <exception class>: <message>"; end of file of stdin exits.

import com.scalar.db.api.DistributedTransaction;
import com.scalar.db.api.DistributedTransactionAdmin;
import com.scalar.db.api.DistributedTransactionManager;
import com.scalar.db.api.Get;
import com.scalar.db.api.Put;
import com.scalar.db.api.Result;
import com.scalar.db.api.TableMetadata;
import com.scalar.db.exception.transaction.CommitConflictException;
import com.scalar.db.exception.transaction.CrudConflictException;
import com.scalar.db.exception.transaction.TransactionException;
import com.scalar.db.exception.transaction.UnknownTransactionStatusException;
import com.scalar.db.io.DataType;
import com.scalar.db.io.Key;
import com.scalar.db.service.TransactionFactory;
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

@SuppressWarnings("deprecation") // DistributedTransaction.put: see put() below
public final class ScalarDbBank {
  static final String[] SIDES = {"bank_a", "bank_b"};
  static final String TABLE = "accounts";

  private final TransactionFactory factory;
  private final DistributedTransactionManager manager;
  private final List<Thread> workers = new ArrayList<>();
  private volatile boolean running;
  private volatile int accounts;
  private final AtomicLong committed = new AtomicLong();
  private final AtomicLong conflicts = new AtomicLong();
  private final AtomicLong unknown = new AtomicLong();
  private final AtomicLong errors = new AtomicLong();
  private final AtomicReference<String> lastError = new AtomicReference<>("-");

  private ScalarDbBank(Properties props) {
    factory = TransactionFactory.create(props);
    manager = factory.getTransactionManager();
  }

  private static void say(String line) {
    synchronized (System.out) {
      System.out.println(line);
      System.out.flush();
    }
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

  private static Properties load(String path) throws IOException {
    Properties props = new Properties();
    try (InputStream in = new FileInputStream(path)) {
      props.load(in);
    }
    return props;
  }

  private static Get get(String side, int id) {
    return Get.newBuilder().namespace(side).table(TABLE).partitionKey(Key.ofInt("id", id)).build();
  }

  // Put, not the newer Insert/Update: ScalarDB 3.13's gRPC client answers those with
  // UnsupportedOperationException.
  private static Put put(String side, int id, long balance, int transfers) {
    return Put.newBuilder()
        .namespace(side)
        .table(TABLE)
        .partitionKey(Key.ofInt("id", id))
        .bigIntValue("balance", balance)
        .intValue("transfers", transfers)
        .build();
  }

  private void setup(int n, long balance) throws Exception {
    DistributedTransactionAdmin admin = factory.getTransactionAdmin();
    try {
      admin.createCoordinatorTables(true);
      TableMetadata metadata =
          TableMetadata.newBuilder()
              .addColumn("id", DataType.INT)
              .addColumn("balance", DataType.BIGINT)
              .addColumn("transfers", DataType.INT)
              .addPartitionKey("id")
              .build();
      for (String side : SIDES) {
        admin.createNamespace(side, true);
        admin.createTable(side, TABLE, metadata, true);
      }
    } finally {
      admin.close();
    }
    DistributedTransaction tx = manager.begin();
    try {
      for (String side : SIDES) {
        for (int id = 0; id < n; id++) {
          tx.put(put(side, id, balance, 0));
        }
      }
      tx.commit();
    } catch (TransactionException e) {
      tx.abort();
      throw e;
    }
    accounts = n;
  }

  private void transferOnce() {
    ThreadLocalRandom random = ThreadLocalRandom.current();
    int a = random.nextInt(accounts);
    int b = random.nextInt(accounts);
    long amount = 1 + random.nextInt(100);
    if (random.nextBoolean()) {
      amount = -amount; // from bank_b to bank_a
    }
    DistributedTransaction tx = null;
    try {
      tx = manager.begin();
      Result ra = tx.get(get("bank_a", a)).orElseThrow(() -> new IllegalStateException("no account"));
      Result rb = tx.get(get("bank_b", b)).orElseThrow(() -> new IllegalStateException("no account"));
      tx.put(put("bank_a", a, ra.getBigInt("balance") - amount, ra.getInt("transfers") + 1));
      tx.put(put("bank_b", b, rb.getBigInt("balance") + amount, rb.getInt("transfers") + 1));
      tx.commit();
      committed.incrementAndGet();
    } catch (CrudConflictException | CommitConflictException e) {
      conflicts.incrementAndGet();
      abortQuietly(tx);
    } catch (UnknownTransactionStatusException e) {
      unknown.incrementAndGet();
    } catch (Exception e) {
      errors.incrementAndGet();
      lastError.set(describe(e));
      abortQuietly(tx);
    }
  }

  private static void abortQuietly(DistributedTransaction tx) {
    if (tx == null) {
      return;
    }
    try {
      tx.abort();
    } catch (Exception e) {
      // the transaction is gone either way
    }
  }

  private void start(int threads) {
    running = true;
    for (int i = 0; i < threads; i++) {
      Thread worker =
          new Thread(
              () -> {
                while (running) {
                  transferOnce();
                }
              },
              "transfer-" + i);
      worker.start();
      workers.add(worker);
    }
  }

  private void stop() throws InterruptedException {
    running = false;
    for (Thread worker : workers) {
      worker.join();
    }
    workers.clear();
  }

  // One transaction reading every account; retried while lazy recovery resolves records left
  // uncommitted (an UncommittedRecordException is a CrudConflictException).
  private static String books(DistributedTransactionManager manager, int n) throws Exception {
    long deadline = System.currentTimeMillis() + 40_000;
    int tries = 0;
    while (true) {
      tries++;
      DistributedTransaction tx = manager.begin();
      try {
        long sum = 0;
        long[] transfers = new long[SIDES.length];
        int missing = 0;
        for (int s = 0; s < SIDES.length; s++) {
          for (int id = 0; id < n; id++) {
            Optional<Result> row = tx.get(get(SIDES[s], id));
            if (row.isPresent()) {
              sum += row.get().getBigInt("balance");
              transfers[s] += row.get().getInt("transfers");
            } else {
              missing++;
            }
          }
        }
        tx.commit();
        return String.format(
            "books sum=%d transfers_a=%d transfers_b=%d missing=%d tries=%d",
            sum, transfers[0], transfers[1], missing, tries);
      } catch (CrudConflictException | CommitConflictException e) {
        abortQuietly(tx);
        if (System.currentTimeMillis() > deadline) {
          throw e;
        }
        Thread.sleep(200);
      } catch (Exception e) {
        abortQuietly(tx);
        throw e;
      }
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: ScalarDbBank PROPERTIES_FILE");
      System.exit(2);
    }
    ScalarDbBank bank = new ScalarDbBank(load(args[0]));
    say("ready");
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      String[] words = line.trim().split("\\s+");
      try {
        switch (words[0]) {
          case "setup":
            bank.setup(Integer.parseInt(words[1]), Long.parseLong(words[2]));
            say("done");
            break;
          case "start":
            bank.start(Integer.parseInt(words[1]));
            say("started");
            break;
          case "stop":
            bank.stop();
            say(
                String.format(
                    "stopped committed=%d conflicts=%d unknown=%d errors=%d last=%s",
                    bank.committed.get(),
                    bank.conflicts.get(),
                    bank.unknown.get(),
                    bank.errors.get(),
                    bank.lastError.get()));
            break;
          case "count":
            say("count " + bank.committed.get());
            break;
          case "books":
            int n = Integer.parseInt(words[1]);
            if (words.length > 2) {
              TransactionFactory other = TransactionFactory.create(load(words[2]));
              DistributedTransactionManager manager = other.getTransactionManager();
              try {
                say(books(manager, n));
              } finally {
                manager.close();
              }
            } else {
              say(books(bank.manager, n));
            }
            break;
          case "":
            break;
          default:
            say("error IllegalArgumentException: unknown command " + words[0]);
        }
      } catch (Exception e) {
        say("error " + describe(e));
      }
    }
    bank.stop();
    bank.manager.close();
    System.exit(0);
  }
}
