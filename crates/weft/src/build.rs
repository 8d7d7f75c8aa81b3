//! Running each function's build command, and reading the components.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use weft_manifest::Manifest;

/// Runs the build command of every function that has one, in the order the
/// manifest lists them. Build output goes to stderr.
pub fn run_builds(app_dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let mut done: Vec<(&str, &Path)> = Vec::new();
    for function in &manifest.functions {
        let Some(build) = &function.build else {
            continue;
        };
        // Functions sharing a build (same command, same directory) build once.
        if done
            .iter()
            .any(|(c, w)| *c == build.command && *w == build.workdir.as_path())
        {
            continue;
        }
        let workdir = app_dir.join(&build.workdir);
        if !workdir.is_dir() {
            bail!(
                "function `{}`: build workdir `{}` does not exist (fix `build.workdir` in [function.{}])",
                function.name,
                workdir.display(),
                function.name
            );
        }
        eprintln!(
            "building {}: {} (in {})",
            function.name,
            build.command,
            workdir.display()
        );
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("function `{}`: cannot run its build command", function.name))?;
        if !status.success() {
            bail!(
                "function `{}`: the build command `{}` failed ({status}); fix the build, or run with --no-build to use the existing file",
                function.name,
                build.command
            );
        }
        done.push((&build.command, &build.workdir));
    }
    Ok(())
}

/// Reads and checks `APP_DIR/weft.toml`, with the sections weft's
/// capabilities bring.
pub fn load_manifest(app_dir: &Path) -> anyhow::Result<(Manifest, String)> {
    let capabilities = weft_node::capabilities::all();
    let sections: Vec<&dyn weft_manifest::Section> = capabilities.iter().filter_map(|c| c.section()).collect();
    Manifest::load_with(app_dir, &sections).map_err(|d| anyhow::anyhow!("{d}"))
}

/// Loads and checks a manifest, runs builds, and checks the sources exist.
pub fn prepare_app(app_dir: &Path, build: bool) -> anyhow::Result<(Manifest, String)> {
    let (manifest, text) = load_manifest(app_dir)?;
    let file = app_dir.join("weft.toml").display().to_string();
    manifest
        .check_files(app_dir, &text, &file)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    if build {
        run_builds(app_dir, &manifest)?;
    }
    manifest
        .check_sources(app_dir, &text, &file)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    for workflow in &manifest.workflows {
        definition(app_dir, workflow, &manifest)?;
    }
    Ok((manifest, text))
}

/// A workflow's definition file, read and validated (the deploy checks
/// it again, with what its Tasks name).
pub fn definition(app_dir: &Path, workflow: &weft_manifest::Workflow, manifest: &Manifest) -> anyhow::Result<Vec<u8>> {
    let path = app_dir.join(&workflow.definition);
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "workflow `{}`: cannot read its definition {}: {e}; fix `definition` in [workflow.{}]",
            workflow.name,
            path.display(),
            workflow.name
        )
    })?;
    // Deployed as JSON, whichever it is written in.
    let yaml = weft_workflows::definition::is_yaml(&workflow.definition);
    let bytes = weft_workflows::definition::document(&bytes, yaml)
        .map(|document| document.to_string().into_bytes())
        .map_err(|why| {
            anyhow::anyhow!(
                "workflow `{}`: its definition {} is {why}",
                workflow.name,
                path.display()
            )
        })?;
    if let Err(mistakes) = weft_node::capabilities::workflows::check(&bytes, manifest) {
        let lines: Vec<String> = mistakes.iter().map(|m| format!("  {}: {m}", path.display())).collect();
        anyhow::bail!(
            "workflow `{}`: {} mistake(s) in its definition:\n{}",
            workflow.name,
            mistakes.len(),
            lines.join("\n")
        );
    }
    Ok(bytes)
}
