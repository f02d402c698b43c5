// txbackup agent's JMX helper: one long-lived JMX connection to the agent's own Cassandra node.
//
// Run by the agent (txbackup/agent/jmx.py) as a single-file source program:
//     java JmxHelper.java
// It needs only the JDK (javax.management): every call goes through the generic
// MBeanServerConnection.invoke with the operation's signature spelled out, so no Cassandra
// class is loaded and the node's jars are not needed.
//
// Protocol: JSON lines. The first line on stdin connects:
//     {"op":"connect","host":"127.0.0.1","port":7199,"user":"u","password":"p"}   (user optional)
// (the credentials travel on stdin, never on the command line); answer
//     {"ok":true,"host_id":"...","release_version":"5.0.9","ms":12}
// then one request per line, one answer per line, in order:
//     {"id":1,"op":"snapshot","tag":"T","keyspaces":["a","b"]}   takeSnapshot (flushes first)
//     {"id":2,"op":"clear","tag":"T","keyspaces":["a"]}          clearSnapshot of that tag only
//     {"id":3,"op":"flush","keyspaces":["a"]}                    forceKeyspaceFlush of each
//     {"id":4,"op":"ping"}                                        reads ReleaseVersion
// answered {"id":N,"ok":true,"ms":M} or {"id":N,"ok":false,"error":"one line"}, with
// "uncertain":true when the connection broke during the call (the node may have done it).
// The helper exits when stdin closes (its agent is gone), so it never outlives the agent.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class JmxHelper {
    private static final String STORAGE_SERVICE = "org.apache.cassandra.db:type=StorageService";
    private static final String STRING = "java.lang.String";
    private static final String STRINGS = "[Ljava.lang.String;";

    private final PrintStream out;
    private JMXConnector connector;
    private MBeanServerConnection mbeans;
    private ObjectName storage;
    private String host;
    private int port;
    private String user;
    private String password;
    private boolean uncertain;

    JmxHelper(PrintStream out) {
        this.out = out;
    }

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        JmxHelper helper = new JmxHelper(out);
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            helper.answer(line);
        }
        helper.close();
    }

    void answer(String line) {
        Object id = null;
        long started = System.nanoTime();
        Map<String, Object> reply = new LinkedHashMap<>();
        uncertain = false;
        try {
            Object parsed = new Json(line).value();
            if (!(parsed instanceof Map)) {
                throw new IllegalArgumentException("a request must be a JSON object");
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> request = (Map<String, Object>) parsed;
            id = request.get("id");
            if (id != null) {
                reply.put("id", id);
            }
            String op = text(request, "op");
            switch (op) {
                case "connect" -> {
                    host = text(request, "host");
                    port = ((Number) request.get("port")).intValue();
                    user = (String) request.get("user");
                    password = (String) request.get("password");
                    connect();
                    reply.put("host_id", attribute("LocalHostId"));
                    reply.put("release_version", attribute("ReleaseVersion"));
                }
                case "ping" -> reply.put("release_version", attribute("ReleaseVersion"));
                case "snapshot" -> invoke("takeSnapshot",
                        new Object[] {text(request, "tag"), new HashMap<String, String>(), names(request)},
                        new String[] {STRING, "java.util.Map", STRINGS});
                case "clear" -> invoke("clearSnapshot",
                        new Object[] {text(request, "tag"), names(request)}, new String[] {STRING, STRINGS});
                case "flush" -> {
                    for (String keyspace : names(request)) {
                        invoke("forceKeyspaceFlush", new Object[] {keyspace, new String[0]},
                                new String[] {STRING, STRINGS});
                    }
                }
                case "import" -> importTable(text(request, "keyspace"), text(request, "table"),
                        text(request, "dir"));
                default -> throw new IllegalArgumentException("unknown op " + op);
            }
            reply.put("ok", true);
        } catch (Throwable exc) {
            reply.put("ok", false);
            reply.put("error", oneLine(exc));
            if (uncertain) {
                reply.put("uncertain", true);
            }
        }
        reply.put("ms", (System.nanoTime() - started) / 1_000_000);
        out.println(Json.write(reply));
        out.flush();
    }

    private static String text(Map<String, Object> request, String key) {
        Object value = request.get(key);
        if (!(value instanceof String)) {
            throw new IllegalArgumentException(key + ": a string is required");
        }
        return (String) value;
    }

    private static String[] names(Map<String, Object> request) {
        Object value = request.get("keyspaces");
        if (!(value instanceof List)) {
            throw new IllegalArgumentException("keyspaces: a list is required");
        }
        List<?> list = (List<?>) value;
        String[] names = new String[list.size()];
        for (int i = 0; i < names.length; i++) {
            names[i] = (String) list.get(i);
        }
        return names;
    }

    private void connect() throws Exception {
        close();
        JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://" + host + ":" + port + "/jmxrmi");
        Map<String, Object> env = new HashMap<>();
        if (user != null) {
            env.put(JMXConnector.CREDENTIALS, new String[] {user, password == null ? "" : password});
        }
        connector = JMXConnectorFactory.connect(url, env);
        mbeans = connector.getMBeanServerConnection();
        storage = new ObjectName(STORAGE_SERVICE);
    }

    /** The connection, made again once if it broke (the node restarted): the agent's call must
     * not fail for a stale connection when the node is up. */
    private <T> T withConnection(Call<T> call) throws Exception {
        if (mbeans == null) {
            if (host == null) {
                throw new IllegalStateException("not connected");
            }
            connect();
        }
        try {
            return call.run();
        } catch (java.io.IOException exc) {
            if (exc instanceof java.rmi.RemoteException) {
                // the request may have reached the node before the connection broke
                uncertain = true;
                connect();
                return call.run();
            }
            throw exc;
        }
    }

    /** What {@code nodetool import KS TABLE DIR} does with its defaults (level and repaired
     * state reset, SSTables and tokens verified, caches invalidated, files moved, index
     * checksums validated), through this connection: Cassandra 5.0's signature, else 4.x's. */
    private void importTable(String keyspace, String table, String dir) throws Exception {
        if (!keyspace.matches("\\w{1,48}") || !table.matches("\\w{1,48}")) {
            throw new IllegalArgumentException("keyspace and table: word characters only");
        }
        ObjectName name = new ObjectName("org.apache.cassandra.db:type=Tables,keyspace=" + keyspace
                + ",table=" + table);
        Set<String> dirs = new HashSet<>(List.of(dir));
        String set = "java.util.Set";
        String bool = "boolean";
        Object failed;
        try {
            failed = withConnection(() -> mbeans.invoke(name, "importNewSSTables",
                    new Object[] {dirs, true, true, true, true, true, false, false, false, true},
                    new String[] {set, bool, bool, bool, bool, bool, bool, bool, bool, bool}));
        } catch (javax.management.ReflectionException exc) {
            failed = withConnection(() -> mbeans.invoke(name, "importNewSSTables",
                    new Object[] {dirs, true, true, true, true, true, false, false},
                    new String[] {set, bool, bool, bool, bool, bool, bool, bool}));
        }
        if (failed instanceof List<?> list && !list.isEmpty()) {
            throw new IllegalStateException("some SSTables of " + keyspace + "." + table
                    + " were not imported from " + list + " (see the node's log)");
        }
    }

    private Object attribute(String name) throws Exception {
        return withConnection(() -> mbeans.getAttribute(storage, name));
    }

    private void invoke(String operation, Object[] params, String[] signature) throws Exception {
        withConnection(() -> mbeans.invoke(storage, operation, params, signature));
    }

    private void close() {
        if (connector != null) {
            try {
                connector.close();
            } catch (Exception ignored) {
                // closing a broken connection: nothing to do
            }
        }
        connector = null;
        mbeans = null;
    }

    private static String oneLine(Throwable exc) {
        // the cause Cassandra threw travels wrapped (MBeanException, RuntimeMBeanException...)
        Throwable root = exc;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String message = root.getMessage();
        String text = root.getClass().getSimpleName() + (message == null ? "" : ": " + message);
        text = text.replaceAll("\\s+", " ").trim();
        return text.length() > 400 ? text.substring(0, 400) : text;
    }

    @FunctionalInterface
    private interface Call<T> {
        T run() throws Exception;
    }

    /** Just enough JSON: the agent writes the requests, this reads them strictly. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object value() {
            Object v = parse();
            skip();
            if (i != s.length()) {
                throw new IllegalArgumentException("trailing data after the JSON value");
            }
            return v;
        }

        private void skip() {
            while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
        }

        private Object parse() {
            skip();
            if (i >= s.length()) {
                throw new IllegalArgumentException("unexpected end of JSON");
            }
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                i++;
                skip();
                if (peek('}')) {
                    return map;
                }
                do {
                    skip();
                    Object key = parse();
                    if (!(key instanceof String)) {
                        throw new IllegalArgumentException("a JSON key must be a string");
                    }
                    skip();
                    expect(':');
                    map.put((String) key, parse());
                    skip();
                } while (peek(','));
                expect('}');
                return map;
            }
            if (c == '[') {
                List<Object> list = new ArrayList<>();
                i++;
                skip();
                if (peek(']')) {
                    return list;
                }
                do {
                    list.add(parse());
                    skip();
                } while (peek(','));
                expect(']');
                return list;
            }
            if (c == '"') {
                StringBuilder b = new StringBuilder();
                i++;
                while (true) {
                    if (i >= s.length()) {
                        throw new IllegalArgumentException("unterminated JSON string");
                    }
                    char d = s.charAt(i++);
                    if (d == '"') {
                        return b.toString();
                    }
                    if (d != '\\') {
                        b.append(d);
                        continue;
                    }
                    char e = s.charAt(i++);
                    switch (e) {
                        case 'n' -> b.append('\n');
                        case 't' -> b.append('\t');
                        case 'r' -> b.append('\r');
                        case 'b' -> b.append('\b');
                        case 'f' -> b.append('\f');
                        case 'u' -> {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                            i += 4;
                        }
                        default -> b.append(e);
                    }
                }
            }
            for (String word : new String[] {"true", "false", "null"}) {
                if (s.startsWith(word, i)) {
                    i += word.length();
                    return word.equals("null") ? null : Boolean.valueOf(word);
                }
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            if (start == i) {
                throw new IllegalArgumentException("unexpected character in JSON at " + i);
            }
            return Double.valueOf(s.substring(start, i));
        }

        private boolean peek(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) {
                throw new IllegalArgumentException("expected '" + c + "' in JSON at " + i);
            }
        }

        static String write(Map<String, Object> map) {
            StringBuilder b = new StringBuilder("{");
            for (Map.Entry<String, Object> entry : map.entrySet()) {
                if (b.length() > 1) {
                    b.append(',');
                }
                quote(b, entry.getKey());
                b.append(':');
                Object v = entry.getValue();
                if (v == null) {
                    b.append("null");
                } else if (v instanceof Boolean || v instanceof Long || v instanceof Integer) {
                    b.append(v);
                } else if (v instanceof Double) {
                    b.append(((Double) v).longValue());
                } else {
                    quote(b, String.valueOf(v));
                }
            }
            return b.append('}').toString();
        }

        private static void quote(StringBuilder b, String text) {
            b.append('"');
            for (char c : text.toCharArray()) {
                if (c == '"' || c == '\\') {
                    b.append('\\').append(c);
                } else if (c < 0x20) {
                    b.append(String.format("\\u%04x", (int) c));
                } else {
                    b.append(c);
                }
            }
            b.append('"');
        }
    }
}
