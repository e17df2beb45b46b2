//! Certificates from pebble over TLS-ALPN-01 and HTTP-01; a restart served
//! from the cache; a domain the CA cannot validate; a CA that is not there.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Version;

use super::pebble::{free_port, Pebble};
use super::*;

fn acme_section(domain: &str, pebble_directory: &str, ca_root: &Path, cache: &Path, extra: &str) -> String {
    format!(
        "[tls]\nmode = \"acme\"\ndomains = [\"{domain}\"]\ncontact = [\"mailto:ops@osprey.test\"]\ncache_dir = \"{}\"\ndirectory = \"{pebble_directory}\"\nca_root = \"{}\"\n{extra}",
        cache.display(),
        ca_root.display()
    )
}

#[test]
fn tls_alpn_01_certificate_serves_h2_and_http1_and_survives_a_restart_without_a_new_order() {
    capture_logs();
    let domain = "alpn.osprey.test";
    let (listener, addr) = bind();
    let pebble = Pebble::start(addr.port(), free_port());
    pebble.add_a(domain, "127.0.0.1");
    let cache = TempDir::new("acme-cache");
    let settings = acme_section(domain, &pebble.directory, &pebble.api_cert, cache.path(), "");

    let server = osprey_tests::serve(config(&settings), listener, None).unwrap();
    wait_for_cert(&server);
    let h2 = client(&pebble.root_pem, domain, addr, false);
    let first = detect(&h2, domain, addr.port(), Version::HTTP_2);
    assert_eq!(detect(&client(&pebble.root_pem, domain, addr, true), domain, addr.port(), Version::HTTP_11), first);

    // The admin status and the metric show the certificate's expiry.
    let tls = tls_status(&h2, domain, addr.port());
    assert_eq!((tls["mode"].as_str(), tls["domains"][0].as_str()), (Some("acme"), Some(domain)), "{tls}");
    let not_after = tls["not_after"].as_u64().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(not_after > now + 86_400, "not_after {not_after}, now {now}");
    let metrics = h2.get(format!("https://{domain}:{}/metrics", addr.port())).send().unwrap().text().unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("osprey_tls_cert_expiry_seconds ") && !l.ends_with(" 0")), "{metrics}");
    let orders = pebble.orders();
    assert_eq!(orders, 1, "{}", std::fs::read_to_string(pebble.log_path()).unwrap());
    drop(server);

    // A restart on the same cache: the same certificate, and the CA hears nothing.
    let (listener, addr) = bind();
    let server = osprey_tests::serve(config(&settings), listener, None).unwrap();
    wait_for_cert(&server);
    let again = detect(&client(&pebble.root_pem, domain, addr, false), domain, addr.port(), Version::HTTP_2);
    assert_eq!(again, first, "the restarted server must serve the cached certificate");
    assert_eq!(pebble.orders(), orders, "the restart placed a new order");
    assert!(logs().contains(&format!("ACME: serving the cached certificate for {domain}")), "{}", logs());
}

#[test]
fn http_01_certificate_is_validated_through_the_plain_listener_which_redirects_the_rest() {
    capture_logs();
    let domain = "http01.osprey.test";
    let (listener, addr) = bind();
    let (plain, plain_addr) = bind();
    let pebble = Pebble::start(free_port(), plain_addr.port());
    pebble.add_a(domain, "127.0.0.1");
    let cache = TempDir::new("acme-http01");
    let extra = format!("challenge = \"http-01\"\nhttp_listen = \"{plain_addr}\"\n");
    let settings = acme_section(domain, &pebble.directory, &pebble.api_cert, cache.path(), &extra);
    let server = osprey_tests::serve(config(&settings), listener, Some(plain)).unwrap();
    wait_for_cert(&server);
    detect(&client(&pebble.root_pem, domain, addr, false), domain, addr.port(), Version::HTTP_2);

    let plain = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = plain.get(format!("http://{plain_addr}/v1/detect?conf=0.5")).header("host", domain).send().unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], format!("https://{domain}:{}/v1/detect?conf=0.5", addr.port()).as_str());
}

#[test]
fn a_domain_the_ca_cannot_validate_is_logged_with_the_cause_and_the_plain_side_keeps_answering() {
    capture_logs();
    // Not added to the CA's DNS: it resolves to 127.0.0.2, where nothing listens.
    let domain = "nowhere.osprey.test";
    let (listener, addr) = bind();
    let (plain, plain_addr) = bind();
    let pebble = Pebble::start(addr.port(), free_port());
    let cache = TempDir::new("acme-nowhere");
    let settings = acme_section(domain, &pebble.directory, &pebble.api_cert, cache.path(), &format!("http_listen = \"{plain_addr}\"\n"));
    let server = osprey_tests::serve(config(&settings), listener, Some(plain)).unwrap();
    let expected = format!("ACME: no certificate for {domain}: the CA could not validate {domain}");
    wait_until(Duration::from_secs(60), "the failed validation in the log", || logs().contains(&expected));
    let line = logs().lines().find(|l| l.contains(&expected)).unwrap().to_string();
    assert!(line.contains("retrying in 1 s") && line.contains("resolves to this host"), "{line}");
    assert!(server.shared.tls.get().unwrap().cert().not_after.is_none());
    let resp = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().get(format!("http://{plain_addr}/healthz")).header("host", domain).send().unwrap();
    assert_eq!(resp.status(), 308);
}

#[test]
fn an_unreachable_directory_is_logged_with_what_to_check() {
    capture_logs();
    let domain = "unreachable.osprey.test";
    let (listener, _) = bind();
    let cache = TempDir::new("acme-unreachable");
    let closed = free_port();
    let settings = format!(
        "[tls]\nmode = \"acme\"\ndomains = [\"{domain}\"]\ncache_dir = \"{}\"\ndirectory = \"https://127.0.0.1:{closed}/dir\"\n",
        cache.path().display()
    );
    let _server = osprey_tests::serve(config(&settings), listener, None).unwrap();
    let expected = format!("ACME: no certificate for {domain}: cannot reach the CA");
    wait_until(Duration::from_secs(30), "the unreachable CA in the log", || logs().contains(&expected));
    let line = logs().lines().find(|l| l.contains(&expected)).unwrap().to_string();
    assert!(line.contains("check the directory URL") && line.contains("retrying in"), "{line}");
}
