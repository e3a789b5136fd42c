//! A mesh CA for tests of TLS on a router's TCP endpoint: a throwaway CA
//! and certificates it signs, made by `openssl` (Debian's, on every
//! machine here) in a directory of the test's own. P-256 keys, valid for
//! two days, keys of mode 0600 as the router insists.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

/// A CA: its certificate is what frontends trust (`--tls-ca`).
#[derive(Debug)]
pub struct MeshCa {
    dir: PathBuf,
}

/// A certificate the CA signed, and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key, mode 0600 (`--tls-key`).
    pub key: PathBuf,
}

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = crate::command("openssl");
    cmd.current_dir(dir).args(args);
    let Output { status, stderr, .. } = cmd.output().expect("openssl runs (Debian's openssl package)");
    assert!(status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&stderr));
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600 a key");
}

const KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl MeshCa {
    /// A new CA in `dir` (made if missing).
    #[track_caller]
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("the CA's directory");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=polis test mesh CA"];
        args.extend(KEY);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(dir, &args);
        private(&dir.join("ca.key"));
        Self { dir: dir.to_owned() }
    }

    /// The CA's certificate, for `--tls-ca`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `host` (an IP address or a DNS name, put in
    /// its subjectAltName), named `name` in the CA's directory.
    #[track_caller]
    pub fn issue(&self, name: &str, host: &str) -> Issued {
        let (key, csr, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let mut args = vec!["req", "-nodes", "-subj", "/CN=polis router"];
        args.extend(KEY);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(&self.dir, &args);
        private(&self.dir.join(&key));
        let san = if host.parse::<std::net::IpAddr>().is_ok() {
            format!("IP:{host}")
        } else {
            format!("DNS:{host}")
        };
        let text = format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
        std::fs::write(self.dir.join(&ext), text).expect("the extensions file");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
            ]
            .into_iter()
            .chain(["-out", &cert, "-extfile", &ext])
            .collect::<Vec<_>>(),
        );
        Issued { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}
