//! `gantry lint` and `gantry plan`: the pipeline crate on the command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use gantry_pipeline::{
    CompileError, Context, Diagnostic, Diagnostics, Event, Limits, Parsed, Source, compile,
    parse_files, parse_workflow_alone, utf8,
};

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Pipeline files, or folders of workflows such as `.woodpecker/`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print nothing for valid files.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The pipeline file, or a folder of workflows such as `.woodpecker/`.
    pub file: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What is known of the build a pipeline is planned or run for.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// push, pull_request, tag, promote, rollback, cron, custom or delete.
    #[arg(long, default_value = "push")]
    pub event: String,
    /// The branch; for a pull request, its target branch.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// For a pull request, the branch it comes from.
    #[arg(long)]
    pub source_branch: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// The git ref; derived from the event, branch, tag or pull request when absent.
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// Pull request number.
    #[arg(long)]
    pub pr: Option<u64>,
    /// A label of the pull request; repeat for several.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Event action, e.g. `opened`, `synchronize`, `closed`.
    #[arg(long)]
    pub action: Option<String>,
    /// Deployment target (promote events).
    #[arg(long)]
    pub target: Option<String>,
    /// Name of the cron job (cron events).
    #[arg(long)]
    pub cron: Option<String>,
    /// A changed file, for `paths` conditions; repeat for several.
    #[arg(long = "changed")]
    pub changed: Vec<String>,
    /// The repository as owner/name.
    #[arg(long, default_value = "owner/repo")]
    pub repo: String,
    #[arg(long, default_value = "0000000000000000000000000000000000000000")]
    pub commit: String,
    /// A build parameter KEY=VALUE; repeat for several.
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// As for a trusted repository: privileged steps, host volumes, exec pipelines.
    #[arg(long)]
    pub trusted: bool,
}

pub fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

/// The files of one build: a file, or every `.yml`/`.yaml` of a folder in name order.
pub fn read_config(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let paths: Vec<PathBuf> = if path.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("while reading the folder {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("{} holds no .yml or .yaml file", path.display());
        }
        paths
    } else {
        vec![path.to_owned()]
    };
    paths
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            let bytes = std::fs::read(&p).with_context(|| format!("while reading {name}"))?;
            let text = utf8(&name, &bytes)?;
            Ok((name, text.to_owned()))
        })
        .collect()
}

pub fn parse_config(files: &[(String, String)]) -> Parsed {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source { name, text })
        .collect();
    parse_files(&sources, &Limits::default())
}

pub fn print_diagnostics(out: &mut impl Write, diagnostics: &Diagnostics) -> std::io::Result<()> {
    for d in diagnostics {
        writeln!(out, "{d}")?;
    }
    Ok(())
}

pub fn lint(args: &LintArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &args.files {
        let files = match read_config(path) {
            Ok(files) => files,
            Err(e) => {
                match e.downcast_ref::<Diagnostic>() {
                    Some(diagnostic) => writeln!(out, "{diagnostic}")?,
                    None => writeln!(out, "{}: error: {e:#}", path.display())?,
                }
                failed = true;
                continue;
            }
        };
        // One file of a `.woodpecker/` folder is checked alone: what it names in other
        // files is checked when the folder is.
        let in_workflow_folder = !path.is_dir()
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == ".woodpecker");
        let parsed = match files.as_slice() {
            [(name, text)] if in_workflow_folder => parse_workflow_alone(name, text),
            _ => parse_config(&files),
        };
        print_diagnostics(&mut out, &parsed.diagnostics)?;
        let errors = parsed.diagnostics.errors().count();
        let warnings = parsed.diagnostics.warnings().count();
        failed |= errors > 0;
        if args.quiet && errors == 0 {
            continue;
        }
        let dialects: Vec<&str> = parsed
            .dialects
            .iter()
            .filter_map(|(_, d)| d.map(|d| d.describe()))
            .collect();
        let dialect = dialects.first().copied().unwrap_or("unknown format");
        match &parsed.config {
            Some(config) => {
                let pipelines = config.pipelines().count();
                let steps: usize = config.pipelines().map(|p| p.steps.len()).sum();
                writeln!(
                    out,
                    "{}: ok: {dialect}, {pipelines} pipeline(s), {steps} step(s), {warnings} warning(s)",
                    path.display()
                )?;
            }
            None => writeln!(
                out,
                "{}: invalid: {dialect}, {errors} error(s), {warnings} warning(s)",
                path.display()
            )?,
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn context(args: &BuildArgs) -> anyhow::Result<Context> {
    let event: Event = args.event.parse()?;
    let mut ctx = Context::push(&args.repo, &args.branch);
    ctx.event = event;
    ctx.commit = args.commit.clone();
    ctx.action = args.action.clone();
    ctx.tag = args.tag.clone();
    ctx.pull_request = args.pr;
    ctx.pull_request_labels = args.labels.clone();
    ctx.deploy_target = args.target.clone();
    ctx.cron = args.cron.clone();
    ctx.changed_files = args.changed.clone();
    ctx.trusted = args.trusted;
    ctx.params = args.params.iter().cloned().collect::<BTreeMap<_, _>>();
    match event {
        Event::PullRequest => {
            let number = args.pr.unwrap_or(1);
            ctx.pull_request = Some(number);
            ctx.target_branch = Some(args.branch.clone());
            ctx.branch = args
                .source_branch
                .clone()
                .unwrap_or_else(|| args.branch.clone());
            ctx.reference = format!("refs/pull/{number}/head");
        }
        Event::Tag => {
            let Some(tag) = &args.tag else {
                bail!("a tag event needs --tag")
            };
            ctx.branch = String::new();
            ctx.reference = format!("refs/tags/{tag}");
        }
        _ => {}
    }
    if let Some(reference) = &args.reference {
        ctx.reference = reference.clone();
    }
    Ok(ctx)
}

/// A compile error as the command line says it: an untrusted plan names `--trusted`, the way
/// out on one's own machine.
pub fn refusal(error: &CompileError) -> String {
    match error {
        CompileError::Untrusted(_) => format!(
            "{error}\nadd --trusted if you trust this file: it then runs with your own rights on this machine"
        ),
        CompileError::Invalid(_) => error.to_string(),
    }
}

pub fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let ctx = context(&args.build)?;
    let files = read_config(&args.file)?;
    let parsed = parse_config(&files);
    let mut err = std::io::stderr().lock();
    print_diagnostics(&mut err, &parsed.diagnostics)?;
    let Some(config) = parsed.config else {
        writeln!(err, "{}: invalid, no plan", args.file.display())?;
        return Ok(ExitCode::FAILURE);
    };
    let plan = match compile(&config, &ctx) {
        Ok(plan) => plan,
        Err(e) => {
            writeln!(err, "{}", refusal(&e))?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan).context("while writing the plan")?;
        writeln!(out)?;
    } else {
        write!(out, "{plan}")?;
    }
    Ok(ExitCode::SUCCESS)
}
