import java.sql.*;

/** Prints what pgjdbc's DatabaseMetaData tells of a small schema, one
 *  line a row, so that the output over Runnel can be compared with the
 *  output over PostgreSQL. Argument: the server's port. */
public class JdbcMetadata {
    static void print(String what, ResultSet rs, String... columns) throws SQLException {
        try (rs) {
            while (rs.next()) {
                StringBuilder line = new StringBuilder(what);
                for (String c : columns) line.append(" | ").append(c).append('=').append(rs.getString(c));
                System.out.println(line);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runnel?user=runnel";
        try (Connection conn = DriverManager.getConnection(url)) {
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE SCHEMA jdbcmeta");
                st.execute("CREATE TABLE jdbcmeta.accounts (id serial PRIMARY KEY, email varchar(80) NOT NULL UNIQUE,"
                        + " balance numeric(12,2) DEFAULT 0, born date, note text)");
                st.execute("CREATE INDEX accounts_born ON jdbcmeta.accounts (born, note)");
                st.execute("CREATE TABLE jdbcmeta.lines (account bigint, line int, amount double precision,"
                        + " PRIMARY KEY (account, line))");
                st.execute("CREATE VIEW jdbcmeta.rich AS SELECT id, email FROM jdbcmeta.accounts WHERE balance > 100");
            }
            try {
                DatabaseMetaData meta = conn.getMetaData();
                print("tables", meta.getTables(null, "jdbcmeta", "%", null),
                        "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE");
                print("columns", meta.getColumns(null, "jdbcmeta", "accounts", "%"),
                        "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME", "COLUMN_SIZE", "DECIMAL_DIGITS",
                        "NULLABLE", "COLUMN_DEF", "ORDINAL_POSITION", "IS_NULLABLE", "IS_AUTOINCREMENT");
                for (String table : new String[] {"accounts", "lines"}) {
                    print("pk " + table, meta.getPrimaryKeys(null, "jdbcmeta", table),
                            "TABLE_NAME", "COLUMN_NAME", "KEY_SEQ", "PK_NAME");
                    print("index " + table, meta.getIndexInfo(null, "jdbcmeta", table, false, false),
                            "NON_UNIQUE", "INDEX_NAME", "TYPE", "ORDINAL_POSITION", "COLUMN_NAME", "ASC_OR_DESC");
                    print("imported " + table, meta.getImportedKeys(null, "jdbcmeta", table), "FKCOLUMN_NAME");
                }
                print("schemas", meta.getSchemas(null, "jdbcmeta"), "TABLE_SCHEM");
                int types = 0;
                boolean int4 = false, text = false;
                try (ResultSet rs = meta.getTypeInfo()) {
                    while (rs.next()) {
                        types++;
                        int4 |= rs.getString("TYPE_NAME").equals("int4") && rs.getInt("DATA_TYPE") == Types.INTEGER;
                        text |= rs.getString("TYPE_NAME").equals("text") && rs.getInt("DATA_TYPE") == Types.VARCHAR;
                    }
                }
                System.out.println("typeinfo int4=" + int4 + " text=" + text + " some=" + (types > 20));
                try (ResultSet rs = meta.getFunctions(null, "pg_catalog", "lower")) {
                    System.out.println("functions lower=" + rs.next());
                }
            } finally {
                try (Statement st = conn.createStatement()) {
                    st.execute("DROP SCHEMA jdbcmeta CASCADE");
                }
            }
        }
    }
}
