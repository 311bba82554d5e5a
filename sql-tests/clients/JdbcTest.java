// pgjdbc against runnel: startup checks, server-side prepared statements
// (pgjdbc switches to them, with binary transfer, after five executions),
// every common type, and DatabaseMetaData's catalog queries.
// Run: java -cp /usr/share/java/postgresql.jar JdbcTest.java PORT
import java.math.BigDecimal;
import java.sql.*;
import java.time.*;
import java.util.Arrays;

public class JdbcTest {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runnel?user=runnel&prepareThreshold=5";
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData meta = conn.getMetaData();
            check(meta.getDatabaseProductVersion().startsWith("15"), "version " + meta.getDatabaseProductVersion());
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_types (id int PRIMARY KEY, b boolean, l bigint, d double precision, "
                        + "n numeric(12,4), t text, by bytea, dt date, ts timestamp, tz timestamptz)");
            }
            try (PreparedStatement ins = conn.prepareStatement(
                    "INSERT INTO jdbc_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                for (int i = 1; i <= 10; i++) {
                    ins.setInt(1, i);
                    ins.setBoolean(2, i % 2 == 0);
                    ins.setLong(3, 10_000_000_000L + i);
                    ins.setDouble(4, i / 4.0);
                    ins.setBigDecimal(5, new BigDecimal("123.4567").add(BigDecimal.valueOf(i)));
                    ins.setString(6, "row " + i);
                    ins.setBytes(7, new byte[] {0, (byte) i, (byte) 255});
                    ins.setObject(8, LocalDate.of(2024, 1, i));
                    ins.setObject(9, LocalDateTime.of(2024, 1, i, 12, 30, 15));
                    ins.setObject(10, OffsetDateTime.of(2024, 1, i, 12, 0, 0, 0, ZoneOffset.UTC));
                    check(ins.executeUpdate() == 1, "insert " + i);
                }
            }
            try (PreparedStatement sel = conn.prepareStatement("SELECT * FROM jdbc_types WHERE id = ?")) {
                for (int i = 1; i <= 10; i++) {
                    sel.setInt(1, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next(), "row " + i);
                        check(rs.getBoolean("b") == (i % 2 == 0), "b " + i);
                        check(rs.getLong("l") == 10_000_000_000L + i, "l " + i);
                        check(rs.getDouble("d") == i / 4.0, "d " + i);
                        check(rs.getBigDecimal("n").compareTo(new BigDecimal("123.4567").add(BigDecimal.valueOf(i))) == 0, "n " + i);
                        check(rs.getString("t").equals("row " + i), "t " + i);
                        check(Arrays.equals(rs.getBytes("by"), new byte[] {0, (byte) i, (byte) 255}), "by " + i);
                        check(rs.getObject("dt", LocalDate.class).equals(LocalDate.of(2024, 1, i)), "dt " + i);
                        check(rs.getObject("ts", LocalDateTime.class).equals(LocalDateTime.of(2024, 1, i, 12, 30, 15)), "ts " + i);
                        check(rs.getObject("tz", OffsetDateTime.class).toInstant()
                                .equals(Instant.parse(String.format("2024-01-%02dT12:00:00Z", i))), "tz " + i);
                        check(!rs.next(), "one row " + i);
                    }
                }
            }
            // Statements without rows past the fifth run (described with
            // NoData), batches, and java.sql.Date/Time sent as untyped text
            // with a zone appended.
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_batch (id int, d date, t time, s text)");
            }
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?, ?, ?)")) {
                for (int i = 1; i <= 8; i++) {
                    ins.setInt(1, i);
                    ins.setDate(2, java.sql.Date.valueOf("2024-01-0" + i));
                    ins.setTime(3, Time.valueOf("12:00:0" + i));
                    ins.setString(4, "one");
                    check(ins.executeUpdate() == 1, "dated insert " + i);
                }
                for (int i = 10; i < 14; i++) {
                    ins.setInt(1, i);
                    ins.setDate(2, java.sql.Date.valueOf("2024-02-01"));
                    ins.setTime(3, Time.valueOf("01:02:03"));
                    ins.setString(4, "batch");
                    ins.addBatch();
                }
                check(Arrays.equals(ins.executeBatch(), new int[] {1, 1, 1, 1}), "batch counts");
            }
            try (PreparedStatement up = conn.prepareStatement("UPDATE jdbc_batch SET s = ? WHERE id > ?")) {
                for (int i = 1; i <= 7; i++) {
                    up.setString(1, "u" + i);
                    up.setInt(2, 10);
                    check(up.executeUpdate() == 3, "update count " + i);
                }
            }
            try (PreparedStatement sel = conn.prepareStatement("SELECT d, t FROM jdbc_batch WHERE id = ?")) {
                sel.setInt(1, 3);
                try (ResultSet rs = sel.executeQuery()) {
                    check(rs.next() && rs.getDate(1).toString().equals("2024-01-03")
                            && rs.getTime(2).toString().equals("12:00:03"), "date and time read back");
                }
            }
            // Bulk load and unload through pgjdbc's CopyManager.
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_copy (id int PRIMARY KEY, name text)");
            }
            org.postgresql.copy.CopyManager copy = conn.unwrap(org.postgresql.PGConnection.class).getCopyAPI();
            long loaded = copy.copyIn("COPY jdbc_copy FROM STDIN WITH (FORMAT csv)",
                    new java.io.StringReader("1,one\n2,\"t,wo\"\n3,\n"));
            check(loaded == 3, "copyIn count " + loaded);
            java.io.StringWriter unloaded = new java.io.StringWriter();
            long written = copy.copyOut("COPY (SELECT * FROM jdbc_copy ORDER BY id) TO STDOUT WITH (FORMAT csv)", unloaded);
            check(written == 3 && unloaded.toString().equals("1,one\n2,\"t,wo\"\n3,\n"), "copyOut " + unloaded);
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                boolean found = false;
                while (rs.next()) found |= rs.getString("TABLE_NAME").equals("jdbc_types");
                check(found, "getTables lists jdbc_types");
            }
            try (Statement st = conn.createStatement()) {
                try {
                    st.execute("SELECT * FROM no_such_table");
                    check(false, "error expected");
                } catch (SQLException e) {
                    check("42P01".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                try (ResultSet rs = st.executeQuery("SELECT count(*) FROM jdbc_types")) {
                    check(rs.next() && rs.getLong(1) == 10, "count");
                }
            }
        }
        System.out.println("jdbc: ok");
    }
}
