//! `portcullis`: the runner service and the operator's dev CLI. A thin main: parse, dispatch,
//! map errors to exit codes (64 for bad usage or configuration, as linkerd does).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use portcullis_runner::{audit, sandbox};
use portcullis_runner::devstack::up::{self, UpOptions, DEV_AGENTS, TRUST_DOMAIN};
use portcullis_runner::devstack::{bundle, certs, users};
use portcullis_runner::service::{cluster, serve, tls};
use portcullis_runner::telemetry;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Least-privilege gateway runner for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum PlansAction {
    /// Verify every plan in a plan directory.
    Verify {
        #[arg(long, default_value = ".portcullis/runner/plans")]
        dir: PathBuf,
        /// The runner's Ed25519 public key (SPKI PEM).
        #[arg(long, default_value = ".portcullis/certs/runner-signing-key.pub.pem")]
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Start dev certificates, the runner and Envoy with the filter; stop on Ctrl-C.
    Up {
        /// Repository root (envoy/, policies/, catalog/ and target/ are found here).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        #[arg(long, default_value = ".portcullis")]
        state_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9443")]
        runner_listen: SocketAddr,
        #[arg(long, default_value = "catalog/example.yaml")]
        catalog: PathBuf,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long, default_value = "target/wasm32-wasip1/wasm/portcullis_filter.wasm")]
        wasm: PathBuf,
        /// Also stop when stdin reaches end of file (for supervisors and test harnesses: the
        /// stack goes down with its parent, whichever way the parent exits).
        #[arg(long, hide = true)]
        stop_on_stdin_eof: bool,
        /// YAML/JSON file with extra plugin-configuration sections: `rate_limits`, `limits`,
        /// `denial_status`, `profile`.
        #[arg(long)]
        gateway_settings: Option<PathBuf>,
        /// The runner answers with `application/json` bodies instead of event streams.
        #[arg(long)]
        json_response: bool,
        /// Trusted user-token issuers: a JSON file `{"issuers": [{"issuer", "audiences",
        /// "jwks", "leeway_seconds"}]}`. Default: the dev issuer in <state-dir>/certs/users.
        #[arg(long)]
        users: Option<PathBuf>,
        #[command(flatten)]
        control: serve::ControlArgs,
        /// Export traces and metrics over OTLP/gRPC to this collector (HOST:PORT): the
        /// runner's, and Envoy's spans (service portcullis-gateway). Default: none.
        #[arg(long, value_name = "HOST:PORT")]
        otlp_endpoint: Option<String>,
        /// Put the gateway in front of this MCP server instead of the runner
        /// (`http://HOST:PORT/PATH` or `https://...`; agents still use /mcp). The filter
        /// enforces identity, validation and policy as before; the server may ignore the ticket.
        #[arg(long, value_name = "URL")]
        upstream: Option<portcullis_runner::devstack::envoy_config::Upstream>,
        /// PEM CA bundle for an https `--upstream`.
        #[arg(long, requires = "upstream")]
        upstream_ca: Option<PathBuf>,
        /// Where the signed audit checkpoints go (default <state-dir>/audit/checkpoints.jsonl);
        /// keep them where whoever can rewrite the audit log cannot.
        #[arg(long)]
        audit_checkpoints: Option<PathBuf>,
        #[command(flatten)]
        backend: cluster::BackendArgs,
    },
    /// Run the runner's MCP server (TLS; only the gateway's client certificate is accepted).
    Serve {
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        #[arg(long)]
        catalog: PathBuf,
        /// The policy bundle (the gateway's): the runner evaluates its plan rules
        /// (`plan_decision`) on the plan an apply cites.
        #[arg(long)]
        policies: PathBuf,
        /// Ed25519 SPKI PEM of the gateway's ticket signing key.
        #[arg(long)]
        ticket_public_key: PathBuf,
        #[arg(long, default_value = "portcullis-gateway")]
        ticket_issuer: String,
        #[command(flatten)]
        tls: tls::ServerTlsArgs,
        /// SPIFFE ID the gateway's client certificate must carry (repeatable).
        #[arg(long, required = true)]
        gateway_id: Vec<String>,
        /// The runner's state: `<state-dir>/runner` (plans, approvals, seen tickets),
        /// `<state-dir>/audit/audit.jsonl`; created 0700.
        #[arg(long, default_value = ".portcullis")]
        state_dir: PathBuf,
        /// The runner's Ed25519 PKCS#8 PEM key: signs plan statements and audit checkpoints
        /// (default <state-dir>/certs/runner-signing-key.pem).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Where the signed audit checkpoints go (default <state-dir>/audit/checkpoints.jsonl).
        #[arg(long)]
        audit_checkpoints: Option<PathBuf>,
        /// Envoy's access log to ingest the gateway's decisions from (none by default).
        #[arg(long)]
        gateway_access_log: Option<PathBuf>,
        #[command(flatten)]
        control: serve::ControlArgs,
        #[command(flatten)]
        backend: cluster::BackendArgs,
        /// Export traces and metrics over OTLP/gRPC to this collector (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        otlp_endpoint: Option<String>,
    },
    /// The audit trail: verify it, or show one call's records.
    Audit {
        #[command(subcommand)]
        command: portcullis_runner::audit::cli::AuditCommand,
    },
    /// Create (or reuse) a dev PKI: CA, gateway and runner certificates, agent identities.
    Certs {
        #[arg(long, default_value = ".portcullis/certs")]
        dir: PathBuf,
        #[arg(long, default_value = TRUST_DOMAIN)]
        trust_domain: String,
        /// Agent names; each gets spiffe://<trust-domain>/ns/agents/sa/<name>.
        #[arg(long = "agent")]
        agents: Vec<String>,
    },
    /// Write the filter's plugin configuration for a policy bundle, catalog and signing key.
    ///
    /// It holds the ticket signing key: with --output it is written to a new file of mode
    /// 0600; to stdout only when stdout is not a terminal (a pipe or a redirect, whose file
    /// mode is then the shell's to choose).
    PluginConfig {
        /// Write to this file (mode 0600, replaced atomically) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long, default_value = "catalog/example.yaml")]
        catalog: PathBuf,
        #[arg(long, default_value = ".portcullis/certs/ticket-signing-key.pem")]
        signing_key: PathBuf,
        /// Trusted user-token issuers (JSON, as for `up --users`). Default: the dev issuer
        /// next to the signing key (<certs>/users/jwks.json).
        #[arg(long)]
        users: Option<PathBuf>,
    },
    /// Print a user token (JWT) signed by the dev issuer, for `Authorization: Bearer`.
    Token {
        #[arg(long, default_value = ".portcullis/certs")]
        certs: PathBuf,
        #[arg(long)]
        sub: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long, default_value = portcullis_runner::devstack::users::DEV_AUDIENCE)]
        aud: String,
        /// Seconds until the token expires (negative: already expired).
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
        expires_in: i64,
    },
    /// Read one tools/call JSON-RPC request on stdin and print its plan hash.
    PlanHash,
    /// Decide pending approvals through the gateway, as a person (approval console identity
    /// and your user token).
    Approvals(portcullis_runner::approvals::cli::ApprovalsArgs),
    /// Check stored plans offline: each artifact against its name (SHA-256) and its signed
    /// statements against the runner's public key.
    Plans {
        #[command(subcommand)]
        action: PlansAction,
    },
    /// Policy tooling.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Internal: the first process inside a fresh sandbox (see sandbox::local).
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the Rego unit tests (`test_*` rules) of a policy bundle, like `opa test`.
    Test {
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long, default_value = "catalog/example.yaml")]
        catalog: PathBuf,
    },
    /// Evaluate `data.portcullis.authz.decision` for one input document with regorus.
    ///
    /// Prints the decision document, then its verdict, reasons and rule ids. The input is the
    /// JSON document policy sees as `input` (see `PolicyInput`: method, tool, arguments,
    /// plan_hash, workload, user).
    #[command(after_help = "Exit status: 0 allowed, 3 denied, 64 bad input (unreadable or invalid JSON, duplicate keys), or a policy bundle or catalog that does not load, compile or evaluate.")]
    Eval {
        /// JSON input document (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long, default_value = "catalog/example.yaml")]
        catalog: PathBuf,
        /// Print only the decision document (one line of JSON) on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SandboxInit { args } = cli.command {
        // Runs inside the new namespaces: no logging set-up, no runtime.
        return sandbox::local::init_main(args);
    }
    // rmcp logs every session id it creates at INFO: session ids are bearer secrets, so rmcp
    // speaks only at WARN and above unless RUST_LOG says otherwise.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rmcp=warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: error: {e:#}");
            ExitCode::from(64)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Up { root, state_dir, listen, runner_listen, catalog, policies, wasm, stop_on_stdin_eof, gateway_settings, json_response, users, control, otlp_endpoint, audit_checkpoints, upstream, upstream_ca, backend } => {
            let otlp = otlp_endpoint.clone();
            let opts = UpOptions { root, state_dir, listen, runner_listen, catalog, policies, wasm, stop_on_stdin_eof, gateway_settings, json_response, users, control, otlp_endpoint, audit_checkpoints, upstream, upstream_ca, backend };
            let rt = runtime()?;
            let result = rt.block_on(with_telemetry(otlp.as_deref(), up::up(opts)));
            // `--stop-on-stdin-eof` reads stdin on a blocking thread that only EOF ends: when
            // `up` stops for another reason (Envoy died), waiting for it would hang the exit.
            rt.shutdown_background();
            result?;
        }
        Command::Serve { listen, catalog, policies, ticket_public_key, ticket_issuer, tls, gateway_id, state_dir, signing_key, audit_checkpoints, gateway_access_log, control, backend, otlp_endpoint } => {
            let exe = std::env::current_exe()?;
            let key = signing_key.unwrap_or_else(|| state_dir.join("certs").join(certs::RUNNER_SIGNING_KEY));
            let key_pem = std::fs::read(&key).with_context(|| format!("reading the runner signing key {}", key.display()))?;
            let audit = audit::AuditLog::open(audit::AuditConfig::in_state_dir(&state_dir, audit_checkpoints, key_pem.clone()))?;
            let serving = async {
                let tools = bundle::load_catalog(&catalog)?;
                let opts = serve::ServeOptions {
                    listen,
                    catalog: serve::SharedCatalog::load(&policies, &catalog)?,
                    ticket_public_key_pem: std::fs::read(&ticket_public_key).with_context(|| format!("reading {}", ticket_public_key.display()))?,
                    ticket_issuer,
                    tls: tls.server_config(gateway_id)?,
                    backends: backend.backends(exe, control.limits(), &tools, &audit).await?,
                    json_response: false,
                    control: control.options(state_dir.join("runner"), key_pem),
                    audit: audit.clone(),
                };
                audit::start_tasks(&audit, gateway_access_log);
                serve::serve(opts, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
            };
            runtime()?.block_on(with_telemetry(otlp_endpoint.as_deref(), serving))?;
            audit.checkpoint_if_new()?;
        }
        Command::Certs { dir, trust_domain, agents } => {
            let names: Vec<&str> = if agents.is_empty() { DEV_AGENTS.to_vec() } else { agents.iter().map(String::as_str).collect() };
            let pki = certs::ensure(&dir, &trust_domain, &names)?;
            println!("CA: {}", pki.ca_cert.display());
            for a in &pki.agents {
                println!("agent {} {} cert {} key {}", a.name, a.spiffe_id, a.cert.display(), a.key.display());
            }
            println!("user issuer {} key {} jwks {}", users::DEV_ISSUER, pki.user_issuer.key.display(), pki.user_issuer.jwks.display());
        }
        Command::PluginConfig { output, policies, catalog, signing_key, users: users_file } => {
            let dev = users::DevIssuer::in_dir(signing_key.parent().unwrap_or(std::path::Path::new(".")));
            let users = users::users_config(users_file.as_deref(), &dev)?;
            let config = bundle::plugin_config(&bundle::load_policy(&policies, false)?, &catalog, &signing_key, &users)?;
            match output {
                Some(path) => certs::write_file(&path, config + "\n", certs::KEY_MODE)?,
                // A terminal shows it to anyone behind the screen, and keeps it in scrollback.
                None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                    bail!("refusing to print the plugin configuration (it holds the ticket signing key) to a terminal: use --output FILE, or a pipe")
                }
                None => println!("{config}"),
            }
        }
        Command::Token { certs, sub, groups, aud, expires_in } => {
            let request = users::TokenRequest { sub, groups, audience: aud, expires_in };
            println!("{}", users::mint(&users::DevIssuer::in_dir(&certs), &request)?);
        }
        Command::Approvals(args) => runtime()?.block_on(portcullis_runner::approvals::cli::run(args))?,
        Command::Plans { action: PlansAction::Verify { dir, public_key } } => {
            let key = portcullis_runner::keys::parse_public(&std::fs::read(&public_key).with_context(|| format!("reading {}", public_key.display()))?)?;
            let report = portcullis_runner::plans::verify_dir(&dir, &key).with_context(|| format!("reading {}", dir.display()))?;
            for problem in &report.problems {
                eprintln!("portcullis plans verify: {problem}");
            }
            if !report.problems.is_empty() {
                bail!("{} problem(s) in {} plan artifact(s)", report.problems.len(), report.artifacts);
            }
            println!("ok: {} plan artifact(s), {} signed statement(s)", report.artifacts, report.statements);
        }
        Command::PlanHash => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            println!("{}", plan_hash_of(&body)?);
        }
        Command::Policy { command: PolicyCommand::Test { policies, catalog } } => {
            let bundle = bundle::load_policy(&policies, true)?;
            let outcomes = portcullis_core::authz::run_tests(&bundle, &bundle::load_catalog(&catalog)?)?;
            let failed = outcomes.iter().filter(|o| !o.passed).count();
            for o in &outcomes {
                let detail = o.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                println!("{} {}{detail}", if o.passed { "PASS" } else { "FAIL" }, o.name);
            }
            println!("{} passed, {failed} failed", outcomes.len() - failed);
            if failed > 0 || outcomes.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Policy { command: PolicyCommand::Eval { input, policies, catalog, json } } => {
            return portcullis_runner::devstack::policy_cli::eval_command(&input, &policies, &catalog, json);
        }
        Command::Audit { command } => return audit::cli::run(command),
        Command::SandboxInit { .. } => bail!("__sandbox-init is internal"),
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_hash_of(body: &[u8]) -> Result<String> {
    use portcullis_core::jsonrpc::{validate, Method};
    let value = portcullis_core::json::parse_strict(body, portcullis_core::json::Limits::default())?;
    match validate(&value)?.method {
        Method::ToolsCall { name, arguments } => Ok(portcullis_core::plan::plan_hash(&name, arguments.as_ref())?),
        other => bail!("not a tools/call request: {}", other.name()),
    }
}

/// Runs `service` with OpenTelemetry export to `otlp_endpoint` (if any), and flushes what is
/// left when it ends.
async fn with_telemetry(otlp_endpoint: Option<&str>, service: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let telemetry = telemetry::init(otlp_endpoint, telemetry::SERVICE_NAME)?;
    let result = service.await;
    // The exporters' last export runs on this runtime: block this worker, not the runtime.
    tokio::task::block_in_place(|| telemetry.shutdown());
    result
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
