//! `osprey plugin new NAME`: a plugin project that builds as it is made.
//!
//! The templates (`plugins/templates/`), the host's own `wit/` and the Rust
//! SDK's sources are compiled into this binary, so a project always matches
//! the world of the host that made it, and making one needs no network.
//! A Rust project made inside a checkout whose `wit/` is this host's depends
//! on that checkout's SDK by path; anywhere else the embedded SDK is written
//! beside the project (`vendor/osprey-plugin-sdk`, it is not on crates.io).

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use include_dir::{include_dir, Dir};

static TEMPLATES: Dir = include_dir!("$CARGO_MANIFEST_DIR/../plugins/templates");
static WIT: Dir = include_dir!("$CARGO_MANIFEST_DIR/../wit");
static SDK: Dir = include_dir!("$CARGO_MANIFEST_DIR/../plugins/sdk");
/// The workspace manifest: the SDK inherits its package fields from it.
const WORKSPACE: &str = include_str!("../../../Cargo.toml");
/// Where the vendored SDK goes in a project: two levels down, so that its
/// `wit_bindgen::generate!(path: "../../wit")` reads the project's `wit/`.
const VENDORED_SDK: &str = "vendor/osprey-plugin-sdk";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

/// Where in a chain the stage sits; it picks the template's example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Upload -> model input tensor (before a detector).
    Pre,
    /// Filters detections (after a detector).
    Post,
    /// Adds a field to the JSON answer (after a detector).
    Report,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pre => "pre",
            Kind::Post => "post",
            Kind::Report => "report",
        }
    }

    /// The `osprey plugin run` arguments that put the stage in a chain of the default config.
    fn run_args(self) -> &'static str {
        match self {
            Kind::Pre => "--after yolo",
            Kind::Post => "--before image-prep,yolo --settings 'zone = [0, 0, 384, 576]'",
            Kind::Report => "--before image-prep,yolo",
        }
    }
}

pub struct New {
    pub name: String,
    pub lang: Lang,
    pub kind: Kind,
    /// The project's folder; `./NAME` when `None`.
    pub dir: Option<PathBuf>,
}

/// Makes the project and prints where it is and what to run next.
pub fn new(args: &New) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{}: the folder exists and is not empty; pick another NAME or --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("make {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let files = match args.lang {
        Lang::Rust => rust_files(args, &dir)?,
        Lang::Python => python_files(args, &dir),
    };
    for (rel, text) in &files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    println!("made {} (a {} stage in {}) in {}", args.name, args.kind.name(), lang_name(args.lang), dir.display());
    println!("next: {}", next_steps(args.lang));
    Ok(())
}

/// A plugin name that is also a Cargo package, a Python file and a config key.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("plugin name \"{name}\" is not valid: use lowercase letters, digits and '-', starting with a letter (at most 64), e.g. zone-count");
    }
    Ok(())
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
    }
}

fn next_steps(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "cd into it, then `cargo test` and `cargo build --release --target wasm32-wasip2` (its README says the rest)",
        Lang::Python => "cd into it; its README has the componentize-py commands (`make setup` installs componentize-py)",
    }
}

type Files = Vec<(PathBuf, String)>;

fn rust_files(args: &New, dir: &Path) -> anyhow::Result<Files> {
    let crate_name = args.name.replace('-', "_");
    let mut vars = common_vars(args, &crate_name);
    let wasm = dir.join(format!("target/wasm32-wasip2/release/{crate_name}.wasm"));
    vars.push(("{{wasm}}", wasm.display().to_string()));
    let mut files = Files::new();
    match checkout_sdk(dir) {
        Some(sdk) => {
            vars.push(("{{sdk_path}}", relative(dir, &sdk).display().to_string()));
            vars.push(("{{sdk_note}}", "by path into the osprey checkout this project was made in".into()));
            vars.push(("{{sdk_row}}", "SDK | `osprey-plugin-sdk`, by path into this osprey checkout |".into()));
        }
        None => {
            vars.push(("{{sdk_path}}", VENDORED_SDK.into()));
            vars.push(("{{sdk_note}}", "written here by `osprey plugin new` (it is not published on crates.io)".into()));
            vars.push(("{{sdk_row}}", format!("`{VENDORED_SDK}/` | the guest SDK of the host that made this project, with its WIT (`../../wit`) |")));
            files.extend(vendored_sdk()?);
        }
    }
    let kind = args.kind.name();
    for (from, to) in [
        ("rust/Cargo.toml", "Cargo.toml"),
        ("rust/Cargo.lock", "Cargo.lock"),
        ("rust/README.md", "README.md"),
        ("rust/gitignore", ".gitignore"),
        (&format!("rust/{kind}.rs"), "src/lib.rs"),
        (&format!("routes/{kind}.toml"), "route.toml"),
    ] {
        files.push((to.into(), fill(template(from), &vars)));
    }
    files.extend(wit_files());
    Ok(files)
}

fn python_files(args: &New, dir: &Path) -> Files {
    let module = args.name.replace('-', "_");
    let mut vars = common_vars(args, &module);
    vars.push(("{{wasm}}", dir.join(format!("{module}.wasm")).display().to_string()));
    let kind = args.kind.name();
    let mut files: Files = [
        ("python/README.md", "README.md"),
        ("python/requirements.txt", "requirements.txt"),
        ("python/gitignore", ".gitignore"),
        (&format!("python/{kind}.py"), "app.py"),
        (&format!("python/test_{kind}.py"), "test_app.py"),
        (&format!("routes/{kind}.toml"), "route.toml"),
    ]
    .into_iter()
    .map(|(from, to)| (to.into(), fill(template(from), &vars)))
    .collect();
    files.extend(wit_files());
    files
}

fn common_vars(args: &New, crate_name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("{{name}}", args.name.clone()),
        ("{{crate}}", crate_name.to_string()),
        ("{{kind}}", args.kind.name().to_string()),
        ("{{run_args}}", args.kind.run_args().to_string()),
        ("{{osprey_version}}", env!("CARGO_PKG_VERSION").to_string()),
        ("{{wit_version}}", crate::plugin::inspect::wit_version().to_string()),
    ]
}

fn template(path: &str) -> &'static str {
    TEMPLATES.get_file(path).and_then(|f| f.contents_utf8()).unwrap_or_else(|| panic!("plugins/templates/{path} is embedded"))
}

fn fill(text: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(text.to_string(), |text, (key, value)| text.replace(key, value))
}

/// The host's `wit/`, every file, at `wit/` in the project.
fn wit_files() -> Files {
    let mut files = Files::new();
    every_file(&WIT, &mut |path, text| files.push((Path::new("wit").join(path), text.to_string())));
    files
}

fn every_file(dir: &'static Dir<'static>, f: &mut impl FnMut(&'static Path, &'static str)) {
    for file in dir.files() {
        f(file.path(), file.contents_utf8().expect("text files only"));
    }
    for sub in dir.dirs() {
        every_file(sub, f);
    }
}

/// The SDK's sources, with a manifest that no longer inherits from the
/// osprey workspace: its `*.workspace = true` fields get the workspace's values.
fn vendored_sdk() -> anyhow::Result<Files> {
    let mut files = Files::new();
    every_file(&SDK, &mut |path, text| {
        if path != Path::new("Cargo.toml") {
            files.push((Path::new(VENDORED_SDK).join(path), text.to_string()));
        }
    });
    let manifest = SDK.get_file("Cargo.toml").and_then(|f| f.contents_utf8()).expect("the SDK's Cargo.toml is embedded");
    files.push((Path::new(VENDORED_SDK).join("Cargo.toml"), standalone_manifest(manifest)?));
    Ok(files)
}

fn standalone_manifest(manifest: &str) -> anyhow::Result<String> {
    let workspace: toml::Table = toml::from_str(WORKSPACE)?;
    let inherited = |section: &str| workspace.get("workspace").and_then(|w| w.get(section)).and_then(|s| s.as_table()).cloned().unwrap_or_default();
    let mut sdk: toml::Table = toml::from_str(manifest)?;
    for (section, from) in [("package", inherited("package")), ("dependencies", inherited("dependencies"))] {
        let Some(table) = sdk.get_mut(section).and_then(|s| s.as_table_mut()) else { continue };
        for (key, value) in table.iter_mut() {
            if value.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                *value = from.get(key).cloned().with_context(|| format!("the SDK inherits {section}.{key}, which the workspace does not set"))?;
            }
        }
    }
    let header = "# The SDK's manifest, written by `osprey plugin new` with the values it\n# inherited from the osprey workspace filled in.\n";
    Ok(format!("{header}{}", toml::to_string(&sdk)?))
}

/// `plugins/sdk` of the osprey checkout `dir` lies in, when that checkout's
/// world is this host's own (else the embedded SDK is the one that matches).
fn checkout_sdk(dir: &Path) -> Option<PathBuf> {
    let ours = WIT.get_file("plugin.wit")?.contents();
    dir.ancestors()
        .find(|root| root.join("plugins/sdk/Cargo.toml").is_file() && root.join("wit/plugin.wit").is_file())
        .filter(|root| std::fs::read(root.join("wit/plugin.wit")).is_ok_and(|theirs| theirs == ours))
        .map(|root| root.join("plugins/sdk"))
}

/// `to` as seen from `from`; both absolute and canonical.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = std::iter::repeat_n(Component::ParentDir, from.len() - common).collect();
    path.extend(&to[common..]);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_a_crate_a_module_and_a_config_key_are_refused() {
        for good in ["zone", "zone-count", "z2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Zone", "2zone", "zone_count", "zone.count", "../zone", &"z".repeat(65)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("not valid") && e.contains("lowercase"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_vendored_sdk_manifest_inherits_nothing() {
        let files = vendored_sdk().unwrap();
        let (_, manifest) = files.iter().find(|(p, _)| p.ends_with("Cargo.toml")).unwrap();
        assert!(!manifest.contains("workspace = true") && !manifest.contains(".workspace"), "{manifest}");
        let table: toml::Table = toml::from_str(manifest).unwrap();
        assert_eq!(table["package"]["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
        assert!(table["package"]["edition"].is_str());
        assert!(files.iter().any(|(p, _)| p.ends_with("src/lib.rs")), "the sources are there");
    }

    #[test]
    fn every_kind_and_language_has_its_templates_and_no_placeholder_is_left() {
        let dir = std::env::temp_dir().join(format!("osprey-new-test-{}", std::process::id()));
        for lang in [Lang::Rust, Lang::Python] {
            for kind in [Kind::Pre, Kind::Post, Kind::Report] {
                let args = New { name: "zone-count".into(), lang, kind, dir: None };
                let files = match lang {
                    Lang::Rust => rust_files(&args, &dir).unwrap(),
                    Lang::Python => python_files(&args, &dir),
                };
                for (path, text) in &files {
                    assert!(!text.contains("{{"), "{lang:?} {kind:?} {}: a placeholder is left", path.display());
                }
                assert!(files.iter().any(|(p, _)| p == Path::new("wit/plugin.wit")));
            }
        }
    }

    #[test]
    fn inside_this_checkout_the_sdk_is_taken_by_path_and_elsewhere_vendored() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().canonicalize().unwrap();
        assert_eq!(checkout_sdk(&repo.join("plugins/zone")), Some(repo.join("plugins/sdk")));
        assert_eq!(checkout_sdk(Path::new("/")), None);
    }

    #[test]
    fn a_path_relative_to_another() {
        assert_eq!(relative(Path::new("/a/b/plugins/zone"), Path::new("/a/b/plugins/sdk")), Path::new("../sdk"));
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b/c")), Path::new("c"));
    }
}
