//! `logs scan` over what real database servers wrote about real statements: a PostgreSQL 15
//! with pgaudit and a MariaDB with server_audit, each initialised in the test's temp directory,
//! listening only on a unix socket there, run as its package's system account, stopped on
//! drop (fast shutdown, then SIGKILL) and never outliving the test. The statements are the ones
//! an attacker with a database superuser runs (a privileged account given a password, a
//! superuser or file-reading role granted, a user created, the audit switched off) beside a
//! harmless workload that must stay silent. Root only; under CI=true they run or fail.

mod util;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;
use util::services::*;
use util::*;

/// A password the statements set; it must never reach kmsentry's output.
const SECRET: &str = "Tr0ub4dor-kms-9f3e";

fn findings_of<'a>(v: &'a serde_json::Value, rule: &str) -> Vec<&'a serde_json::Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .collect()
}

/// A directory the service account owns, inside the test's temp directory.
fn service_dir(env: &TestEnv, name: &str, owner: (u32, u32)) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // The account must traverse the temp directory to reach its own.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = env.dir.path().join(name);
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(owner.0), Some(owner.1)).unwrap();
    d
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Version 15's own psql, not Debian's version-picking wrapper on PATH.
const PG_PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

#[test]
fn pgaudit_records_of_real_privileged_statements_raise_the_pgaudit_rules() {
    require_root!();
    if !need(&format!("{PG_BIN}/postgres"))
        || !need("/usr/lib/postgresql/15/lib/pgaudit.so")
        || !need(PG_PSQL)
    {
        return;
    }
    let env = TestEnv::new();
    let pg = account("postgres");
    let d = service_dir(&env, "pg", pg);
    let data = d.join("data");
    run_ok(
        "initdb",
        Command::new(format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data)
            .current_dir(&d)
            .uid(pg.0)
            .gid(pg.1),
    );
    // Debian's log line prefix, so the lines are the ones /var/log/postgresql holds.
    let port = free_port();
    let conf = format!(
        "shared_preload_libraries = 'pgaudit'\npgaudit.log = 'role,ddl,misc,read,write'\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {port}\nlog_line_prefix = '%m [%p] %q%u@%d '\nlogging_collector = off\nlog_timezone = 'UTC'\n",
        d.to_str().unwrap()
    );
    let pgconf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&pgconf).unwrap();
    text.push_str(&conf);
    std::fs::write(&pgconf, text).unwrap();
    let log = d.join("postgresql-15-main.log");
    let mut server = Service::spawn_logging(
        Command::new(format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(&data)
            .current_dir(&d)
            .uid(pg.0)
            .gid(pg.1),
        &log,
        // SIGINT: fast shutdown.
        Some(nix::sys::signal::Signal::SIGINT),
    );
    let sock = d.join(format!(".s.PGSQL.{port}"));
    wait_for(
        "postgres to accept connections",
        Duration::from_secs(60),
        || {
            assert!(
                server.running(),
                "postgres exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            sock.exists()
                && std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("ready to accept connections")
        },
    );
    // One psql session per call, each statement its own `-c` as an operator types them.
    let psql = |stmts: &[&str]| {
        let mut c = Command::new("timeout");
        c.args(["60", PG_PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&d)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .current_dir(&d)
            .uid(pg.0)
            .gid(pg.1);
        for s in stmts {
            c.args(["-c", s]);
        }
        run_ok("psql", &mut c);
    };
    // The harmless workload first: none of it may raise a rule.
    psql(&[
        "CREATE EXTENSION pgaudit",
        "CREATE EXTENSION pgcrypto",
        "CREATE TABLE cards (id int PRIMARY KEY, card bytea)",
        "INSERT INTO cards VALUES (1, pgp_sym_encrypt('4111', 'k'))",
        "SELECT pgp_sym_decrypt(card, 'k') FROM cards WHERE id = 1",
        "SET search_path = public",
        "ALTER ROLE postgres SET search_path = public",
    ]);
    let harmless = std::fs::read_to_string(&log).unwrap();
    let harmless_records = harmless.matches("AUDIT: SESSION").count();
    assert!(
        harmless_records >= 7,
        "pgaudit did not log the workload: {harmless}"
    );
    // What an attacker with a superuser session does.
    let set_password = format!("ALTER ROLE app_admin WITH PASSWORD '{SECRET}'");
    psql(&[
        "CREATE USER app_admin",
        &set_password,
        "ALTER ROLE app_admin SUPERUSER",
        "GRANT pg_read_server_files TO app_admin",
        "SELECT pgp_sym_decrypt(card, 'k') FROM cards",
        "ALTER ROLE app_admin SET pgaudit.log = 'none'",
        "ALTER SYSTEM SET pgaudit.log = 'none'",
        "SELECT pg_reload_conf()",
    ]);
    wait_for("the reload to be logged", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("parameter \"pgaudit.log\" changed to \"none\"")
    });
    // A session that switches its own audit off: pgaudit logs a SET only under the new
    // setting, so this one is not in the log at all (see docs/logs.md); what follows it is not
    // either.
    psql(&["SET pgaudit.log = 'none'", "CREATE USER silent_admin"]);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("silent_admin"), "{text}");

    // The harmless part alone: parsed, and silent.
    let quiet = d.join("harmless.log");
    std::fs::write(&quiet, &harmless).unwrap();
    let source = "    format: pgaudit\n    logsource: {product: postgresql, service: pgaudit}";
    let (code, v, _) = scan_source(&env, &quiet, source);
    assert_eq!(code, 0, "{harmless}\n{v}");
    assert_eq!(v["summary"]["counts"]["unparseable"], 0, "{v}");

    let (code, v, out) = scan_source(&env, &log, source);
    assert_eq!(code, 1, "{text}\n{v}");
    let ids = rule_ids(&v);
    for rule in [
        "kmsentry-pg-create-role",
        "kmsentry-pg-role-password",
        "kmsentry-pg-grant-superuser",
        "kmsentry-pg-bulk-decrypt",
        "kmsentry-pg-audit-disabled",
    ] {
        assert!(
            ids.iter().any(|i| i == rule),
            "{rule} missing: {ids:?}\n{text}"
        );
    }
    // Two grants: SUPERUSER and pg_read_server_files.
    assert_eq!(
        findings_of(&v, "kmsentry-pg-grant-superuser").len(),
        2,
        "{v}"
    );
    // ALTER ROLE … SET, ALTER SYSTEM SET and the server's own note of the reloaded value.
    assert_eq!(
        findings_of(&v, "kmsentry-pg-audit-disabled").len(),
        3,
        "{v}"
    );
    let pw = findings_of(&v, "kmsentry-pg-role-password");
    assert_eq!(pw.len(), 1, "{v}");
    assert_eq!(pw[0]["severity"], "high");
    assert_eq!(pw[0]["fields"]["user"], "postgres");
    assert_eq!(pw[0]["fields"]["class"], "ROLE");
    assert!(pw[0]["log"]["offset"].as_u64().unwrap() > 0);
    assert!(pw[0]["time"].is_string(), "{v}");
    // The only bulk decrypt is the one without a WHERE clause.
    assert_eq!(findings_of(&v, "kmsentry-pg-bulk-decrypt").len(), 1, "{v}");
    assert_eq!(findings_of(&v, "kmsentry-pg-create-role").len(), 1, "{v}");
    assert!(
        !text.contains(SECRET),
        "pgaudit logged the password: {text}"
    );
    assert!(!out.contains(SECRET), "{out}");
}

#[test]
fn server_audit_records_of_real_privileged_statements_raise_the_mariadb_rules() {
    require_root!();
    if !need("mariadbd") || !need("mariadb-install-db") || !need("mariadb") {
        return;
    }
    let env = TestEnv::new();
    let my = account("mysql");
    let d = service_dir(&env, "my", my);
    let data = d.join("data");
    run_ok(
        "mariadb-install-db",
        Command::new("timeout")
            .args(["120", "mariadb-install-db", "--no-defaults", "--user=mysql"])
            .arg(format!("--datadir={}", data.to_str().unwrap()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .current_dir(&d),
    );
    let sock = d.join("mariadb.sock");
    let audit = d.join("server_audit.log");
    let err = d.join("error.log");
    // Started as mysql rather than with --user: a server that drops privileges itself would
    // clear the death signal.
    let mut server = Service::spawn_logging(
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.to_str().unwrap()))
            .arg(format!("--socket={}", sock.to_str().unwrap()))
            .arg(format!(
                "--pid-file={}",
                d.join("mariadb.pid").to_str().unwrap()
            ))
            .arg(format!("--log-error={}", err.to_str().unwrap()))
            .args(["--skip-networking", "--plugin-load-add=server_audit"])
            .args([
                "--server-audit-logging=ON",
                "--server-audit-events=CONNECT,QUERY",
            ])
            .arg(format!(
                "--server-audit-file-path={}",
                audit.to_str().unwrap()
            ))
            .current_dir(&d)
            .uid(my.0)
            .gid(my.1),
        &d.join("mariadbd.out"),
        Some(nix::sys::signal::Signal::SIGTERM),
    );
    wait_for("mariadbd's socket", Duration::from_secs(60), || {
        assert!(
            server.running(),
            "mariadbd exited: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        sock.exists()
    });
    let sql = |stmts: &str| {
        run_ok(
            "mariadb",
            Command::new("timeout")
                .args(["60", "mariadb", "--no-defaults", "-u", "root", "-S"])
                .arg(&sock)
                .args(["-e", stmts])
                .current_dir(&d),
        );
    };
    sql("CREATE DATABASE app; CREATE TABLE app.t (id int, v text); \
         INSERT INTO app.t VALUES (1, 'a'); SELECT v FROM app.t WHERE id = 1; \
         SET GLOBAL server_audit_logging=ON;");
    wait_for(
        "server_audit to log the workload",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .contains("server_audit_logging=ON")
        },
    );
    let harmless = std::fs::read_to_string(&audit).unwrap();
    sql(&format!(
        "CREATE USER 'app_admin'@'localhost' IDENTIFIED BY '{SECRET}'; \
         SET PASSWORD FOR 'app_admin'@'localhost' = PASSWORD('{SECRET}x'); \
         GRANT ALL PRIVILEGES ON *.* TO 'app_admin'@'localhost' WITH GRANT OPTION; \
         GRANT SELECT ON app.* TO 'app_admin'@'localhost'; \
         SET GLOBAL server_audit_logging=OFF;"
    ));
    sql("SET GLOBAL server_audit_logging=ON; UNINSTALL SONAME 'server_audit';");
    drop(server);
    let text = std::fs::read_to_string(&audit).unwrap();

    let source =
        "    format: mariadb-audit\n    logsource: {product: mariadb, service: server_audit}";
    let quiet = d.join("harmless.log");
    std::fs::write(&quiet, &harmless).unwrap();
    let (code, v, _) = scan_source(&env, &quiet, source);
    assert_eq!(code, 0, "{harmless}\n{v}");
    assert_eq!(v["summary"]["counts"]["unparseable"], 0, "{v}");

    let (code, v, out) = scan_source(&env, &audit, source);
    assert_eq!(code, 1, "{text}\n{v}");
    assert_eq!(v["summary"]["counts"]["unparseable"], 0, "{v}");
    let ids = rule_ids(&v);
    for rule in [
        "kmsentry-mariadb-create-user",
        "kmsentry-mariadb-set-password",
        "kmsentry-mariadb-grant-all",
        "kmsentry-mariadb-audit-disabled",
    ] {
        assert!(
            ids.iter().any(|i| i == rule),
            "{rule} missing: {ids:?}\n{text}"
        );
    }
    // CREATE USER … IDENTIFIED BY and SET PASSWORD both set a password.
    assert_eq!(
        findings_of(&v, "kmsentry-mariadb-set-password").len(),
        2,
        "{v}"
    );
    // server_audit_logging=OFF and UNINSTALL SONAME; turning it back ON is not a finding.
    assert_eq!(
        findings_of(&v, "kmsentry-mariadb-audit-disabled").len(),
        2,
        "{v}"
    );
    assert_eq!(
        findings_of(&v, "kmsentry-mariadb-grant-all").len(),
        1,
        "{v}"
    );
    let g = &findings_of(&v, "kmsentry-mariadb-grant-all")[0];
    assert_eq!(g["severity"], "critical");
    assert_eq!(g["fields"]["username"], "root");
    assert!(
        !text.contains(SECRET),
        "server_audit logged the password: {text}"
    );
    assert!(!out.contains(SECRET), "{out}");
}
