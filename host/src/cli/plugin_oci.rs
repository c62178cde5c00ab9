//! `weft plugin push oci://…` and `weft plugin pull oci://…`: components
//! to and from OCI registries, in the WebAssembly artifact layout (see
//! [`crate::oci`]). No Weft server is involved.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::oci::{self, Registry, RegistryOptions};

/// The first bytes of a WebAssembly component (magic, then the component
/// layer's version).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// `weft plugin pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `oci://host[:port]/namespace/name:tag` or `…/name@sha256:<digest>`.
    reference: String,
    /// Where to write the component; default `<name>.wasm` here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Largest component accepted.
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_UPLOAD_BYTES)]
    max_bytes: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach the registry; shared by push and pull.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to this registry although it is not on the loopback
    /// interface (loopback registries always are). Credentials come from
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    #[arg(long)]
    pub plain_http: bool,
}

fn registry(reference: &oci_client::Reference, args: &RegistryArgs) -> anyhow::Result<Registry> {
    let options = RegistryOptions {
        plain_http: if args.plain_http {
            vec![reference.registry().to_owned()]
        } else {
            Vec::new()
        },
    };
    Ok(Registry::for_reference(reference, &options)?)
}

/// Pushes `file` under the tag `reference` names.
pub async fn push(reference: &str, file: &Path, args: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let parsed = oci::parse_reference(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if !bytes.starts_with(&COMPONENT_HEADER) {
        anyhow::bail!(
            "{} is not a WebAssembly component (a core module or another file); build it with `weft plugin build`",
            file.display()
        );
    }
    let digest = registry(&parsed, args)?.push(&parsed, &bytes).await?;
    println!(
        "pushed {} ({} bytes) as {}@{digest}",
        parsed.whole(),
        bytes.len(),
        repository_of(&parsed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `registry/repository`, without tag or digest.
fn repository_of(reference: &oci_client::Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

pub async fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let parsed = oci::parse_reference(&args.reference)?;
    let pulled = registry(&parsed, &args.registry)?
        .pull(&parsed, args.max_bytes)
        .await?;
    let output = args.output.unwrap_or_else(|| {
        let name = parsed.repository().rsplit('/').next().unwrap_or("plugin");
        PathBuf::from(format!("{name}.wasm"))
    });
    std::fs::write(&output, &pulled.bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    println!(
        "pulled {}@{} ({} bytes) to {}",
        repository_of(&parsed),
        pulled.digest,
        pulled.bytes.len(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
