//! The `pepctl` command line. Each subcommand parses its flags, calls the library and prints
//! a human table or `--json`. Errors go to stderr with a non-zero exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use uma_pep_core::config::AsProfile;

use pepctl::apply::{load_seed, Applier, Outcome};
use pepctl::context::{AsContext, Common};
use pepctl::registration::{register_client, ClientFile, ClientOutcome, ClientRequest};
use pepctl::repository::{Repository, StoredResource};

#[derive(Debug, Parser)]
#[command(name = "pepctl", version, about = "Control plane of the uma-pep UMA 2.0 PEP")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// AS issuer URL (discovery at {issuer}/.well-known/uma2-configuration)
    #[arg(long, global = true, env = "PEPCTL_ISSUER")]
    issuer: Option<String>,
    /// AS dialect
    #[arg(long, global = true, env = "PEPCTL_PROFILE", default_value = "uma2",
          value_parser = pepctl::render::core_enum::<AsProfile>(pepctl::render::PROFILE_VALUES))]
    profile: AsProfile,
    /// The PEP's client file (client_id, client_secret)
    #[arg(long, global = true, env = "PEPCTL_CLIENT", default_value = "client.json")]
    client: PathBuf,
    /// The resource repository (SQLite)
    #[arg(long, global = true, env = "PEPCTL_DB", default_value = "pepctl.db")]
    db: PathBuf,
    /// Extra CA certificates (PEM) trusted for https; verification is always on
    #[arg(long, global = true, env = "PEPCTL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Timeout of every outgoing call, in milliseconds
    #[arg(long, global = true, env = "PEPCTL_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
}

// Parsed once per process: the size of one variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Register the PEP's client at the AS; reuses an existing file. Keycloak: its `default`
    /// provider with an initial access token; Gluu/Janssen: RFC 7591 with scope uma_protection
    RegisterClient {
        /// Where to write the client (mode 0600); defaults to --client
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keycloak: the clientId (default: uma-pep-<random>); Gluu/Janssen: client_name (default: uma-pep)
        #[arg(long)]
        client_name: Option<String>,
        /// Initial access token (required by Keycloak: Realm → Clients → Initial access token)
        #[arg(long, env = "PEPCTL_INITIAL_ACCESS_TOKEN", hide_env_values = true)]
        initial_access_token: Option<String>,
    },
    /// Manage the protected resources
    Resources {
        #[command(subcommand)]
        command: ResourcesCommand,
    },
    /// Render configuration for the filter, Envoy or Istio
    Render(pepctl::render::RenderArgs),
    /// Print the public JWKS of a PKCS#8 PEM private key
    Jwks {
        #[arg(long)]
        key: PathBuf,
    },
    /// Serve the Resource API
    Serve(pepctl::api::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum ResourcesCommand {
    /// Register the resources of a default-resources file at the AS and in the repository
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Delete file resources the file no longer lists
        #[arg(long)]
        prune: bool,
        /// Refresh resources whose AS expiry is closer than this many seconds
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        refresh_before_s: i64,
        #[arg(long)]
        json: bool,
    },
    /// List the resources in the repository
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one resource (by id, name or path)
    Show {
        resource: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one resource (by id, name or path) at the AS (unless open) and in the repository
    Delete { resource: String },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Context(#[from] pepctl::context::ContextError),
    #[error(transparent)]
    Registration(#[from] pepctl::registration::RegistrationError),
    #[error(transparent)]
    Repo(#[from] pepctl::repository::RepoError),
    #[error(transparent)]
    Apply(#[from] pepctl::apply::ApplyError),
    #[error(transparent)]
    ResourceSet(#[from] pepctl::resource_set::ResourceSetError),
    #[error(transparent)]
    Render(#[from] pepctl::render::RenderError),
    #[error(transparent)]
    Jwks(#[from] pepctl::jwks::JwksError),
    #[error(transparent)]
    Serve(#[from] pepctl::api::ServeError),
    #[error("no resource {0:?} (by id, name or path)")]
    NoSuchResource(String),
    #[error("{1} resources are named {0:?} (names are unique per owner only): give the id or the path")]
    AmbiguousName(String, usize),
    #[error("{0} resource(s) could not be applied")]
    ApplyFailed(usize),
    #[error("cannot write output: {0}")]
    Output(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not in a redirected file, a pipe or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEPCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pepctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pepctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn common(args: &CommonArgs) -> Common {
    Common {
        issuer: args.issuer.clone(),
        profile: args.profile,
        client: args.client.clone(),
        db: args.db.clone(),
        ca_file: args.ca_file.clone(),
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn find(repo: &Repository, key: &str) -> Result<StoredResource, CliError> {
    if let Some(r) = repo.get(key)? {
        return Ok(r);
    }
    // Names are unique per owner only: a name finds a resource when one resource has it.
    let mut named = repo.list_by_name(key)?;
    match named.len() {
        0 => {}
        1 => return Ok(named.remove(0)),
        n => return Err(CliError::AmbiguousName(key.to_string(), n)),
    }
    if key.starts_with('/') {
        // A path or a pattern, in any spelling of it.
        if let Ok(Some(r)) = pepctl::rules::find_at_path(repo, key)? {
            return Ok(r);
        }
    }
    Err(CliError::NoSuchResource(key.to_string()))
}

fn print_table(list: &[StoredResource]) {
    println!("{:<38} {:<24} {:<24} {:<16} SCOPES", "ID", "NAME", "URI", "OWNER");
    for r in list {
        // An exact resource is marked: `/a` and `/a` exact are two resources.
        let uri = if r.exact { format!("{} (exact)", r.uri) } else { r.uri.clone() };
        println!("{:<38} {:<24} {:<24} {:<16} {}", r.id, r.name, uri, r.owner, r.scopes.join(","));
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let common = common(&cli.common);
    match cli.command {
        Command::RegisterClient { out, client_name, initial_access_token } => {
            let out = out.unwrap_or_else(|| common.client.clone());
            let issuer = common.issuer()?;
            // An existing file (of this issuer and dialect) needs no AS at all: that is what
            // makes restarts idempotent.
            let (file, what) = match ClientFile::reuse(&out, issuer, common.profile)? {
                Some(file) => (file, ClientOutcome::Reused),
                None => {
                    let http = common.http().map_err(pepctl::context::ContextError::from)?;
                    let endpoints = common.endpoints(&http).await?;
                    let request = ClientRequest {
                        issuer,
                        profile: common.profile,
                        client_name: client_name.as_deref(),
                        initial_access_token: initial_access_token.as_deref(),
                    };
                    (register_client(&http, &endpoints, request, &out).await?, ClientOutcome::Created)
                }
            };
            let verb = match what {
                ClientOutcome::Reused => "reused",
                ClientOutcome::Created => "registered",
            };
            println!("{verb} client {} in {}", file.client_id, out.display());
            Ok(())
        }
        Command::Resources { command } => resources(&common, command).await,
        Command::Render(args) => {
            let out = if args.target == pepctl::render::Target::KeycloakClient {
                // Needs no repository (and creates none).
                pepctl::render::keycloak_client(&common, &args)?
            } else {
                let repo = Repository::open(&common.db)?;
                pepctl::render::render(&common, &repo, &args)?
            };
            print!("{out}");
            Ok(())
        }
        Command::Jwks { key } => {
            let jwks = pepctl::jwks::jwks_from_pem_file(&key)?;
            print_json(&jwks)
        }
        Command::Serve(args) => Ok(pepctl::api::serve(&common, args).await?),
    }
}

async fn resources(common: &Common, command: ResourcesCommand) -> Result<(), CliError> {
    let repo = Repository::open(&common.db)?;
    match command {
        ResourcesCommand::Apply { file, prune, refresh_before_s, json } => {
            let wanted = load_seed(&file)?;
            let ctx = AsContext::connect(common).await?;
            let applier = Applier::new(&repo, &ctx.resource_set, refresh_before_s);
            let reports = applier.apply(&wanted, prune).await?;
            if json {
                print_json(&reports)?;
            } else {
                for r in &reports {
                    let outcome = serde_json::to_value(r.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    println!(
                        "{:<10} {:<24} {:<24} {}{}",
                        outcome,
                        r.name,
                        r.uri,
                        r.id.as_deref().unwrap_or("-"),
                        r.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
            }
            let failed = reports.iter().filter(|r| r.outcome == Outcome::Failed).count();
            if failed > 0 {
                return Err(CliError::ApplyFailed(failed));
            }
            Ok(())
        }
        ResourcesCommand::List { json } => {
            let list = repo.list()?;
            if json {
                print_json(&list)
            } else {
                print_table(&list);
                Ok(())
            }
        }
        ResourcesCommand::Show { resource, json } => {
            let r = find(&repo, &resource)?;
            if json {
                print_json(&r)
            } else {
                print_table(std::slice::from_ref(&r));
                Ok(())
            }
        }
        ResourcesCommand::Delete { resource } => {
            let r = find(&repo, &resource)?;
            // An open resource was never registered at the AS: nothing to delete there.
            if !uma_pep_core::resource::is_open(&r.scopes) {
                let ctx = AsContext::connect(common).await?;
                ctx.resource_set.delete(&r.id).await?;
            }
            repo.delete(&r.id)?;
            println!("deleted {} ({})", r.name, r.id);
            Ok(())
        }
    }
}
