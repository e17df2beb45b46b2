//! A private, writable copy of a small deployment for reload tests:
//! `plugins/`, `models/ssd/<N>/model.onnx`, `osprey.toml` with an admin token.

use std::path::PathBuf;

use crate::TestServer;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A private copy of a small deployment: `plugins/`, `models/ssd/<N>/`, `osprey.toml`.
pub struct Site {
    pub dir: PathBuf,
}

impl Site {
    pub fn new(name: &str) -> Site {
        let dir = std::env::temp_dir().join(crate::unique_name(&format!("osprey-{name}")));
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        let built = crate::repo().join("target/wasm32-wasip2/plugin");
        for p in ["image_prep", "ssd"] {
            std::fs::copy(built.join(format!("{p}.wasm")), dir.join(format!("plugins/{p}.wasm"))).unwrap();
        }
        let site = Site { dir };
        site.add_model_version(1, &model_bytes());
        std::fs::copy(crate::repo().join("models/ssd_mobilenet_v2/labels.txt"), site.dir.join("models/ssd/labels.txt")).unwrap();
        std::fs::write(site.dir.join("osprey.toml"), CONFIG).unwrap();
        site
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn add_model_version(&self, n: u32, bytes: &[u8]) {
        let d = self.dir.join(format!("models/ssd/{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.onnx"), bytes).unwrap();
    }

    /// Serves the site with the file watcher on.
    pub fn serve(&self) -> TestServer {
        let server = crate::start(&self.path("osprey.toml"));
        osprey::reload::watch::spawn(server.shared.clone()).unwrap();
        server
    }
}

const CONFIG: &str = r#"
[admin]
token = "test-token-0123456789abcdef"

[models.ssd]
versions = "models/ssd"
labels = "models/ssd/labels.txt"
instances = 1
threads = 1

[plugins.image-prep]
file = "plugins/image_prep.wasm"

[plugins.ssd]
file = "plugins/ssd.wasm"

[[routes]]
path = "/v1/detect/fast"
stages = [
  { plugin = "image-prep", settings = { width = 300, height = 300, fit = "stretch", dtype = "u8" } },
  { plugin = "ssd", settings = { model = "ssd", conf = 0.4 } },
]
"#;

pub fn model_bytes() -> Vec<u8> {
    std::fs::read(crate::repo().join("models/ssd_mobilenet_v2/model.onnx")).unwrap()
}

/// A valid component with different bytes (so a different SHA-256): the
/// original plus a custom section named after `tag`.
pub fn variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![tag.len() as u8];
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"osprey reload test");
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(payload.len() as u8); // size, < 128 bytes
    out.extend_from_slice(&payload);
    out
}

pub fn sha256_prefix(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()[..12].to_string()
}

