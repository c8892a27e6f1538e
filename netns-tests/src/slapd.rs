//! A private OpenLDAP `slapd` for tests: the permanet schema and the
//! example organisation (`configs/ldap/`) on a random localhost port.
//!
//! [`Slapd::start`] builds a cn=config in a temporary directory with
//! `slapadd -n0` (core, cosine, inetorgperson and `configs/ldap/permanet.ldif`,
//! one mdb database for `dc=example,dc=org`, the access rules
//! `configs/ldap/README.md` gives addrd's service account, optionally the
//! memberof overlay and TLS), starts `/usr/sbin/slapd` as a child in the
//! foreground on `127.0.0.1`, waits (with a deadline) until it accepts
//! connections, and loads `configs/ldap/example-org.ldif` through the
//! protocol with `ldapadd` (so the memberof overlay sees the groups).
//!
//! The server is configured with `olcAllows: bind_anon_dn`: a simple bind
//! with a DN and an empty password *succeeds* (as an anonymous bind), so a
//! client that forgets to refuse empty passwords lets anybody in and its
//! tests fail.
//!
//! [`Slapd::stop`] and [`Slapd::restart`] keep the data and the ports (for
//! "directory down, then back" tests). Dropping the [`Slapd`] kills the
//! process (by its PID) and removes the directory, also when a test panics.
//!
//! No root needed. Without slapd installed, [`Slapd::start_or_skip`] says
//! "skipped: slapd not installed" and returns `None` when not root; as root
//! a missing slapd is a failure (`scripts/test-all.sh` installs it).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example organisation's base DN.
pub const BASE_DN: &str = "dc=example,dc=org";
/// The database's root DN (not subject to access rules).
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The root DN's password (test only).
pub const ADMIN_PASSWORD: &str = "permanet-test-admin";
/// addrd's service account in `example-org.ldif`.
pub const SERVICE_DN: &str = "cn=addrd,ou=services,dc=example,dc=org";
/// The service account's password in `example-org.ldif` (lab only).
pub const SERVICE_PASSWORD: &str = "addrd-lab-password";

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SCHEMA_DIR: &str = "/etc/ldap/schema";
const MODULE_DIR: &str = "/usr/lib/ldap";
/// How long slapd may take to start or stop.
const DEADLINE: Duration = Duration::from_secs(15);
/// How often readiness is polled until the deadline.
const POLL: Duration = Duration::from_millis(10);

/// What to configure beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Load the memberof overlay: users get `memberOf` values.
    pub memberof: bool,
    /// Generate a test CA and a server certificate for `127.0.0.1` and
    /// `localhost`, offer StartTLS on the `ldap://` port and listen on an
    /// `ldaps://` port too.
    pub tls: bool,
    /// Log every connection and operation (`-d stats`) to the log
    /// [`Slapd::log`] returns, for tests that check what a client asked.
    pub stats_log: bool,
    /// Do not flush the database to disk at every write (`olcDbNoSync`):
    /// for bulk tests (thousands of entries), whose time would otherwise
    /// be the disk's flushes. The data is the test's, thrown away after.
    pub no_sync: bool,
}

/// Why the test slapd could not be run.
#[derive(Debug)]
pub enum SlapdError {
    /// slapd or ldap-utils are not installed.
    NotInstalled(String),
    /// A file could not be written or read.
    Io(String, io::Error),
    /// slapd or one of the tools failed; the message carries its output.
    Failed(String),
}

impl std::fmt::Display for SlapdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlapdError::NotInstalled(what) => write!(f, "slapd not installed: {what}"),
            SlapdError::Io(what, e) => write!(f, "{what}: {e}"),
            SlapdError::Failed(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for SlapdError {}

/// A running (or stopped) private slapd. See the module documentation.
#[derive(Debug)]
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    ldaps_port: Option<u16>,
    tls: bool,
    stats_log: bool,
}

impl Slapd {
    /// Start a slapd as [`Slapd::start`] does; when slapd is not installed
    /// and the test does not run as root, report the test `test` as
    /// "skipped: slapd not installed" ([`crate::skip`]) and return `None`.
    /// Any other failure panics with slapd's output.
    pub fn start_or_skip(test: &str, options: Options) -> Option<Slapd> {
        match Slapd::start(options) {
            Ok(slapd) => Some(slapd),
            Err(SlapdError::NotInstalled(what)) if !crate::is_root() => {
                crate::skip(
                    test,
                    &format!(
                        "skipped: slapd not installed ({what}); install slapd and \
                         ldap-utils, or run scripts/test-all.sh as root"
                    ),
                );
                None
            }
            Err(e) => panic!("test slapd: {e}"),
        }
    }

    /// Configure, start and load a private slapd. See the module docs.
    pub fn start(options: Options) -> Result<Slapd, SlapdError> {
        check_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("permanet-slapd-")
            .tempdir()
            .map_err(|e| SlapdError::Io("temporary directory".into(), e))?;
        let mut slapd = Slapd {
            dir,
            child: None,
            port: 0,
            ldaps_port: None,
            tls: options.tls,
            stats_log: options.stats_log,
        };
        slapd.configure(options)?;
        // A free port is found by binding port 0 and letting go of it; if
        // another process takes it in between, slapd fails to bind: retry.
        let mut last = None;
        for _ in 0..5 {
            slapd.port = free_port()?;
            slapd.ldaps_port = if options.tls {
                Some(free_port()?)
            } else {
                None
            };
            match slapd.spawn() {
                Ok(()) => match slapd.load_example_org() {
                    Ok(()) => return Ok(slapd),
                    // Another process had the port: the connection that
                    // looked ready was not to our slapd, which has exited
                    // on its failed bind. Retry on another port.
                    Err(e) if !slapd.is_running() => {
                        slapd.stop();
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| SlapdError::Failed("slapd did not start".into())))
    }

    /// `ldap://127.0.0.1:PORT` (plain, StartTLS offered when TLS is on).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    /// The test CA's certificate (PEM) when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.path("ca.pem"))
    }

    /// A file (mode 0600, no trailing newline) holding
    /// [`SERVICE_PASSWORD`], for clients that read the password from a file.
    pub fn service_password_file(&self) -> PathBuf {
        self.path("service.password")
    }

    /// The temporary directory (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the slapd process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// slapd's log (its stderr): errors, and with
    /// [`Options::stats_log`] every operation.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("slapd.log")).unwrap_or_default()
    }

    /// The last part of slapd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(4000);
        log.get(start..).unwrap_or(&log).to_string()
    }

    /// Stop slapd (SIGTERM, then SIGKILL after the deadline), keeping its
    /// data and ports. Returns once the process has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SIGTERM by PID through kill(1): no unsafe code here.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + DEADLINE;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Start slapd again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<(), SlapdError> {
        self.stop();
        let deadline = Instant::now() + DEADLINE;
        // The old listening sockets are gone with the process; slapd sets
        // SO_REUSEADDR, so the ports are free at once. Retry briefly in
        // case of a transient bind failure.
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn configure(&self, options: Options) -> Result<(), SlapdError> {
        let conf_dir = self.path("config");
        let data_dir = self.path("data");
        for d in [&conf_dir, &data_dir] {
            fs::create_dir(d).map_err(|e| SlapdError::Io(d.display().to_string(), e))?;
        }
        write_secret(&self.path("service.password"), SERVICE_PASSWORD)?;
        write_secret(&self.path("admin.password"), ADMIN_PASSWORD)?;
        if options.tls {
            self.write_tls_files()?;
        }
        let ldif = self.config_ldif(options)?;
        let ldif_path = self.path("config.ldif");
        fs::write(&ldif_path, ldif).map_err(|e| SlapdError::Io("config.ldif".into(), e))?;
        run(Command::new(SLAPADD)
            .arg("-n0")
            .arg("-F")
            .arg(&conf_dir)
            .arg("-l")
            .arg(&ldif_path))
    }

    /// The whole cn=config, as LDIF for `slapadd -n0`.
    fn config_ldif(&self, options: Options) -> Result<String, SlapdError> {
        let dir = self.dir.path().display();
        let mut s = String::new();
        let _ = write!(
            s,
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\
             olcPidFile: {dir}/slapd.pid\nolcArgsFile: {dir}/slapd.args\n\
             olcAllows: bind_anon_dn\n"
        );
        if options.tls {
            let _ = write!(
                s,
                "olcTLSCACertificateFile: {dir}/ca.pem\n\
                 olcTLSCertificateFile: {dir}/server.pem\n\
                 olcTLSCertificateKeyFile: {dir}/server.key\n"
            );
        }
        let _ = write!(
            s,
            "\ndn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
             olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb\nolcModuleLoad: argon2\n"
        );
        if options.memberof {
            s.push_str("olcModuleLoad: memberof\n");
        }
        s.push_str("\ndn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n");
        for schema in [
            PathBuf::from(SCHEMA_DIR).join("core.ldif"),
            PathBuf::from(SCHEMA_DIR).join("cosine.ldif"),
            PathBuf::from(SCHEMA_DIR).join("inetorgperson.ldif"),
            configs_dir().join("permanet.ldif"),
        ] {
            let text = fs::read_to_string(&schema)
                .map_err(|e| SlapdError::Io(schema.display().to_string(), e))?;
            s.push_str(&text);
            s.push_str("\n\n");
        }
        let svc = SERVICE_DN;
        let no_sync = if options.no_sync { "TRUE" } else { "FALSE" };
        let _ = write!(
            s,
            "dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
             objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
             dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\n\
             olcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n\
             objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\n\
             olcDbDirectory: {dir}/data\nolcSuffix: {BASE_DN}\nolcRootDN: {ADMIN_DN}\n\
             olcRootPW: {ADMIN_PASSWORD}\nolcDbMaxSize: 1073741824\nolcDbNoSync: {no_sync}\n\
             olcDbIndex: objectClass eq\nolcDbIndex: uid eq\nolcDbIndex: cn eq\n\
             olcDbIndex: member eq\nolcDbIndex: permanetAddress eq\n\
             olcLimits: dn.exact=\"{svc}\" size.prtotal=unlimited\n\
             olcAccess: {{0}}to attrs=userPassword by anonymous auth by self =xw by * none\n\
             olcAccess: {{1}}to dn.base=\"ou=addresses,{BASE_DN}\" attrs=children \
             by dn.exact=\"{svc}\" =rsca by * none\n\
             olcAccess: {{2}}to dn.onelevel=\"ou=addresses,{BASE_DN}\" \
             by dn.exact=\"{svc}\" =rsca by * none\n\
             olcAccess: {{3}}to attrs=permanetAddress by dn.exact=\"{svc}\" write \
             by users read by * none\n\
             olcAccess: {{4}}to dn.base=\"ou=revocations,{BASE_DN}\" attrs=children \
             by dn.exact=\"{svc}\" write by * none\n\
             olcAccess: {{5}}to dn.onelevel=\"ou=revocations,{BASE_DN}\" \
             by dn.exact=\"{svc}\" write by * none\n\
             olcAccess: {{6}}to * by dn.exact=\"{svc}\" read by users read by * none\n"
        );
        if options.memberof {
            s.push_str(
                "\ndn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config\n\
                 objectClass: olcOverlayConfig\nobjectClass: olcMemberOf\n\
                 olcOverlay: {0}memberof\nolcMemberOfRefInt: TRUE\n",
            );
        }
        Ok(s)
    }

    fn write_tls_files(&self) -> Result<(), SlapdError> {
        let tls = |e: rcgen::Error| SlapdError::Failed(format!("test certificates: {e}"));
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "permanet test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
        let ca = ca_params.self_signed(&ca_key).map_err(tls)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(tls)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let key = rcgen::KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(tls)?;
        let write = |name: &str, text: String| {
            fs::write(self.path(name), text).map_err(|e| SlapdError::Io(name.into(), e))
        };
        write("ca.pem", ca.pem())?;
        write("server.pem", cert.pem())?;
        write_secret(&self.path("server.key"), &key.serialize_pem())
    }

    /// Start the process and wait until every listener accepts.
    fn spawn(&mut self) -> Result<(), SlapdError> {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.ldaps_port {
            let _ = write!(urls, " ldaps://127.0.0.1:{p}/");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("slapd.log"))
            .map_err(|e| SlapdError::Io("slapd.log".into(), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| SlapdError::Io("slapd.log".into(), e))?;
        // `-d`: stay in the foreground (a child we can wait for and kill
        // by PID), logging to stderr: errors only, or every operation.
        let child = Command::new(SLAPD)
            .arg("-h")
            .arg(&urls)
            .arg("-F")
            .arg(self.path("config"))
            .arg("-d")
            .arg(if self.stats_log { "stats" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| SlapdError::Io(SLAPD.into(), e))?;
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.ldaps_port).collect();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if !self.is_running() {
                self.stop();
                return Err(SlapdError::Failed(format!(
                    "slapd exited at start:\n{}",
                    self.log_tail()
                )));
            }
            let ready = ports.iter().all(|&p| {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(SlapdError::Failed(format!(
                    "slapd did not accept connections within {DEADLINE:?}:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn load_example_org(&self) -> Result<(), SlapdError> {
        run(Command::new("ldapadd")
            .arg("-x")
            .arg("-H")
            .arg(self.url())
            .arg("-D")
            .arg(ADMIN_DN)
            .arg("-y")
            .arg(self.path("admin.password"))
            .arg("-f")
            .arg(configs_dir().join("example-org.ldif")))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir field removes the directory after this.
    }
}

/// `configs/ldap/` in the source tree.
pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("configs")
        .join("ldap")
}

fn check_installed() -> Result<(), SlapdError> {
    for tool in [SLAPD, SLAPADD] {
        if !Path::new(tool).exists() {
            return Err(SlapdError::NotInstalled(format!("no {tool}")));
        }
    }
    let ldapadd = Command::new("ldapadd")
        .arg("-VV")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if ldapadd.is_err() {
        return Err(SlapdError::NotInstalled("no ldapadd (ldap-utils)".into()));
    }
    if !Path::new(SCHEMA_DIR).join("inetorgperson.ldif").exists() {
        return Err(SlapdError::NotInstalled(format!("no {SCHEMA_DIR}")));
    }
    Ok(())
}

fn free_port() -> Result<u16, SlapdError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| SlapdError::Io("free port".into(), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| SlapdError::Io("free port".into(), e))
}

/// Write a file readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), SlapdError> {
    let err = |e| SlapdError::Io(path.display().to_string(), e);
    fs::write(path, "").map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    fs::write(path, text).map_err(err)
}

fn run(command: &mut Command) -> Result<(), SlapdError> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SlapdError::Io(format!("{command:?}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(SlapdError::Failed(format!(
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slapd.conf form of the schema loads too (`slaptest`).
    #[test]
    fn schema_file_passes_slaptest() {
        if let Err(e) = check_installed() {
            if !crate::is_root() {
                crate::skip("schema_file_passes_slaptest", &format!("skipped: {e}"));
                return;
            }
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let conf = dir.path().join("slapd.conf");
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let text = format!(
            "include {SCHEMA_DIR}/core.schema\ninclude {SCHEMA_DIR}/cosine.schema\n\
             include {SCHEMA_DIR}/inetorgperson.schema\ninclude {}\n\
             modulepath {MODULE_DIR}\nmoduleload back_mdb\n\
             database mdb\nsuffix \"{BASE_DN}\"\ndirectory {}\n",
            configs_dir().join("permanet.schema").display(),
            data.display()
        );
        fs::write(&conf, text).unwrap_or_else(|e| panic!("write: {e}"));
        let result = run(Command::new("/usr/sbin/slaptest")
            .arg("-u")
            .arg("-f")
            .arg(&conf));
        if let Err(e) = result {
            panic!("permanet.schema: {e}");
        }
    }

    /// A test that panics with a slapd running leaves no process and no
    /// directory behind.
    #[test]
    fn cleans_up_when_the_test_panics() {
        let seen = std::sync::Mutex::new(None);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Some(mut slapd) =
                Slapd::start_or_skip("cleans_up_when_the_test_panics", Options::default())
            else {
                return;
            };
            let pid = slapd.child.as_ref().map(Child::id);
            assert!(slapd.is_running());
            if let Ok(mut seen) = seen.lock() {
                *seen = Some((pid, slapd.dir().to_path_buf()));
            }
            panic!("test failure with slapd running");
        }));
        let Some((pid, dir)) = seen.lock().ok().and_then(|mut s| s.take()) else {
            return; // skipped
        };
        assert!(outcome.is_err());
        assert!(!dir.exists(), "temporary directory left behind");
        if let Some(pid) = pid {
            assert!(gone(pid), "slapd {pid} still running");
        }
    }

    /// Whether process `pid` has exited (and been reaped).
    fn gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))
    }

    /// The harness starts, answers, stops, restarts and cleans up.
    #[test]
    fn starts_restarts_and_cleans_up() {
        let Some(mut slapd) =
            Slapd::start_or_skip("starts_restarts_and_cleans_up", Options::default())
        else {
            return;
        };
        let dir = slapd.dir().to_path_buf();
        assert!(slapd.is_running());
        slapd.stop();
        assert!(!slapd.is_running());
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, slapd.port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "stopped slapd still accepts"
        );
        slapd.restart().unwrap_or_else(|e| panic!("restart: {e}"));
        assert!(slapd.is_running());
        let pid = slapd.child.as_ref().map(Child::id);
        drop(slapd);
        assert!(!dir.exists(), "temporary directory left behind");
        if let Some(pid) = pid {
            assert!(gone(pid), "slapd {pid} still running after drop");
        }
    }
}
