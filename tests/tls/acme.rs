//! Certificates from pebble over TLS-ALPN-01 and HTTP-01; a restart served
//! from the cache; a domain the CA cannot validate; a CA that is not there,
//! at the first order and at renewal.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// A certificate for `domain` issued 60 days ago with 10 days left (a third
/// of its life is 23 days: rustls-acme renews at once), by a CA of its own:
/// the cache file's PEM (key first, as rustls-acme stores it), the CA's PEM
/// for clients, the leaf's DER and its expiry.
fn near_expiry(domain: &str) -> (String, String, Vec<u8>, u64) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec![domain.to_string()]).unwrap();
    params.not_before = epoch + (now - Duration::from_secs(60 * 86_400));
    params.not_after = epoch + (now + Duration::from_secs(10 * 86_400));
    let not_after = params.not_after.unix_timestamp() as u64;
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    (format!("{}{}", key.serialize_pem(), leaf.pem()), ca.pem(), leaf.der().to_vec(), not_after)
}

#[test]
fn an_unreachable_directory_at_renewal_keeps_the_certificate_backs_off_and_says_so() {
    capture_logs();
    let domain = "renewal.osprey.test";
    let cache = TempDir::new("acme-renewal");
    let ca_root = cache.path().join("pebble-api.pem");
    // A real order first: the cache then holds the certificate file of this directory URL.
    let settings = {
        let (listener, addr) = bind();
        let pebble = Pebble::start(addr.port(), free_port());
        pebble.add_a(domain, "127.0.0.1");
        std::fs::copy(&pebble.api_cert, &ca_root).unwrap();
        let settings = acme_section(domain, &pebble.directory, &ca_root, &cache.path().join("acme"), "");
        let server = osprey_tests::serve(config(&settings), listener, None).unwrap();
        wait_for_cert(&server);
        settings
        // The server, then pebble, stop here: the directory's port is closed.
    };
    let cert_file = std::fs::read_dir(cache.path().join("acme"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("cached_cert_"))
        .expect("the ordered certificate in the cache");
    // Time moves on: the cached certificate is now due for renewal, and the CA is gone.
    let (pem, root_pem, leaf, not_after) = near_expiry(domain);
    std::fs::write(&cert_file, pem).unwrap();

    let (listener, addr) = bind();
    let server = osprey_tests::serve(config(&settings), listener, None).unwrap();
    wait_for_cert(&server);
    let client = client(&root_pem, domain, addr, false);
    let failed = format!("ACME: no certificate for {domain}: cannot reach the CA");
    let start = Instant::now();
    let (mut served, mut first) = (0, None);
    // Clients are answered with the certificate in hand while the orders fail and back off.
    loop {
        let failures = logs().matches(&failed).count();
        if failures >= 1 && first.is_none() {
            first = Some(Instant::now());
        }
        if failures >= 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no three failed orders within 60 s:\n{}", logs());
        assert_eq!(detect(&client, domain, addr.port(), Version::HTTP_2), leaf, "the served certificate changed");
        served += 1;
    }
    // From the first failure seen (a request late) to the third.
    let took = first.unwrap().elapsed();
    let lines: Vec<String> = logs().lines().filter(|l| l.contains(&failed)).map(str::to_string).collect();
    eprintln!("{served} requests answered while 3 orders failed in {took:.1?}:\n{}", lines.join("\n"));
    for (line, retry) in lines.iter().zip(["retrying in 1 s", "retrying in 2 s", "retrying in 4 s"]) {
        assert!(line.contains(retry), "backoff: {line}");
        assert!(line.contains("still serving the current certificate, which expires in 10.0 days") || line.contains("expires in 9.9 days"), "{line}");
    }
    // 1 s + 2 s between the first failure and the third, less a request's time.
    assert!(took >= Duration::from_millis(2500), "three orders in {took:?}: no backoff");
    let tls = tls_status(&client, domain, addr.port());
    assert_eq!(tls["not_after"].as_u64(), Some(not_after), "{tls}");
    assert!(tls["orders"]["failures"].as_u64() >= Some(3), "{tls}");
    assert!(tls["orders"]["last_error"].as_str().unwrap().contains("cannot reach the CA"), "{tls}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(tls["orders"]["retry_at"].as_u64().unwrap() + 1 >= now, "{tls}");
    let metrics = client.get(format!("https://{domain}:{}/metrics", addr.port())).send().unwrap().text().unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("osprey_tls_acme_order_failures_total "))
        .unwrap_or_else(|| panic!("no failure counter:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(failures >= 3, "{failures} failed orders counted");
}
