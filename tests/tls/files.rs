//! `mode = "files"`: a certificate the test makes, replaced while serving; a
//! broken replacement keeps the old one; a broken pair at start is refused.

use reqwest::Version;

use super::*;

/// A CA, and certificates for `domain` it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "osprey test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// (certificate PEM, key PEM, certificate DER) for `domain`.
    fn issue(&self, domain: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![domain.to_string()]).unwrap().signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn write_pair(dir: &Path, (cert, key, _): &(String, String, Vec<u8>)) {
    // As a renewal tool does: new files renamed over the old ones.
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
}

fn files_section(dir: &Path) -> String {
    format!("[tls]\nmode = \"files\"\ncert = \"{}\"\nkey = \"{}\"\n", dir.join("cert.pem").display(), dir.join("key.pem").display())
}

#[test]
fn replaced_certificate_files_are_served_and_a_broken_replacement_keeps_the_old_pair() {
    capture_logs();
    let domain = "files.osprey.test";
    let ca = Ca::new();
    let dir = TempDir::new("files");
    let first = ca.issue(domain);
    write_pair(dir.path(), &first);
    let (listener, addr) = bind();
    let _server = osprey_tests::serve(config(&files_section(dir.path())), listener, None).unwrap();
    let root = ca.cert.pem();
    let h2 = client(&root, domain, addr, false);
    assert_eq!(detect(&h2, domain, addr.port(), Version::HTTP_2), first.2);
    assert_eq!(detect(&client(&root, domain, addr, true), domain, addr.port(), Version::HTTP_11), first.2);
    let tls = tls_status(&h2, domain, addr.port());
    assert_eq!((tls["mode"].as_str(), tls["domains"][0].as_str()), (Some("files"), Some(domain)), "{tls}");
    assert!(tls["not_after"].as_u64().is_some(), "{tls}");

    let healthz = |c: &reqwest::blocking::Client| served_cert(&c.get(format!("https://{domain}:{}/healthz", addr.port())).send().unwrap());
    let second = ca.issue(domain);
    write_pair(dir.path(), &second);
    wait_until(Duration::from_secs(10), "the new certificate", || healthz(&client(&root, domain, addr, false)) == second.2);

    // A key that does not match: logged once, and the second pair keeps serving.
    let third = ca.issue(domain);
    write_pair(dir.path(), &(third.0.clone(), first.1.clone(), third.2.clone()));
    let expected = "do not belong together";
    wait_until(Duration::from_secs(10), "the mismatch in the log", || logs().contains(expected));
    assert!(logs().lines().any(|l| l.contains(expected) && l.contains("still serving the previous certificate")), "{}", logs());
    assert_eq!(healthz(&client(&root, domain, addr, false)), second.2);
}

#[test]
fn a_broken_pair_at_start_is_refused_with_the_file_named() {
    let dir = TempDir::new("files-broken");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let (listener, _) = bind();
    let err = osprey_tests::serve(config(&files_section(dir.path())), listener, None).err().expect("must refuse to start");
    assert!(err.contains("cert.pem") && err.contains("no CERTIFICATE block"), "{err}");
}
