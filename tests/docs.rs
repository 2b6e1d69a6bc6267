//! The man page and shell completions are generated from the clap
//! definition and checked in. This test fails when they drift; regenerate
//! them with:
//!
//!     UPDATE_GENERATED=1 cargo test --test docs

use std::path::PathBuf;

use clap_complete::Shell;

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();

    files.push((root.join("man/daemonize.1"), man_page()));

    for (shell, name) in [
        (Shell::Bash, "daemonize.bash"),
        (Shell::Zsh, "_daemonize"),
        (Shell::Fish, "daemonize.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut daemonize::cli::command(),
            "daemonize",
            &mut script,
        );
        files.push((root.join("completions").join(name), script));
    }
    files
}

/// clap_mangen's standard sections, then the tool's own (exit status,
/// examples...) from `cli::SECTIONS`, shown unfilled as in `--help`.
fn man_page() -> Vec<u8> {
    let man = clap_mangen::Man::new(daemonize::cli::command());
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    for (title, text) in daemonize::cli::SECTIONS {
        out.extend_from_slice(format!(".SH \"{title}\"\n.nf\n").as_bytes());
        for line in text.lines() {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            let line = match line.starts_with(['.', '\'']) {
                true => format!("\\&{line}"),
                false => line,
            };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b".fi\n");
    }
    man.render_version_section(&mut out).unwrap();
    out
}

#[test]
fn man_page_and_completions_match_the_cli() {
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        if update {
            std::fs::write(&path, &content).expect("write generated file");
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are out of date: {stale:?}\n\
         regenerate with: UPDATE_GENERATED=1 cargo test --test docs"
    );
}
