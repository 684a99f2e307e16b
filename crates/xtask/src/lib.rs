//! Build-time tasks for `make install` and `make deb`: the five tools' man pages and bash, zsh
//! and fish completions, generated from their clap definitions so that they always say what
//! `--help` says. Nothing here is installed; the tools' own main.rs files know nothing of it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use roff::{bold, roman, Roff};

/// One tool: its clap definition, and a parse with its own `Cli` (to check the examples).
pub struct Tool {
    /// The binary's name (and the man page's).
    pub name: &'static str,
    /// The clap command, as the binary builds it.
    pub command: fn() -> clap::Command,
    /// Parse a command line (program name first) exactly as the binary's `Cli` does.
    pub parse: fn(&[String]) -> Result<(), clap::Error>,
}

fn parse_with<C: Parser>(argv: &[String]) -> Result<(), clap::Error> {
    C::try_parse_from(argv).map(drop)
}

/// The [`Tool`] of a tool library crate (its `TOOL` and `Cli`).
macro_rules! tool {
    ($krate:ident) => {
        Tool {
            name: $krate::TOOL,
            command: $krate::Cli::command,
            parse: parse_with::<$krate::Cli>,
        }
    };
}

/// Every tool that ships, in the order the README lists them.
pub fn tools() -> [Tool; 5] {
    [
        tool!(concierge_discover),
        tool!(concierge_courier),
        tool!(concierge_heartbeat),
        tool!(concierge_scale),
        tool!(concierge_setup),
    ]
}

/// The heading of the block that ends every tool's `--help`.
pub const EXAMPLES_HEADING: &str = "Examples:";

/// One example at the end of `--help`: what it does (its `# ` line) and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub what: String,
    pub command: String,
}

/// Split a tool's after-help text into what comes before the examples and the examples.
pub fn split_examples(after_help: &str) -> (&str, Vec<Example>) {
    let marker = format!("\n\n{EXAMPLES_HEADING}\n");
    let Some(at) = after_help.find(&marker) else {
        return (after_help, Vec::new());
    };
    let mut examples = Vec::new();
    let mut what = String::new();
    for line in after_help[at + marker.len()..].lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix("# ") {
            what = comment.to_string();
        } else if !line.is_empty() {
            examples.push(Example {
                what: std::mem::take(&mut what),
                command: line.to_string(),
            });
        }
    }
    (&after_help[..at], examples)
}

/// Split a command line into words as a POSIX shell would for the quoting the examples use:
/// white space separates, '…' and "…" group (no expansions, no escapes inside '…').
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => w.extend(chars.next()),
                        Some(x) => w.push(x),
                        None => return Err(format!("unterminated {c} in {line:?}")),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The man page of `tool`, section 1: clap_mangen's title, name, synopsis, description and
/// options, then the after-help text (kept as laid out), EXAMPLES, VERSION and SEE ALSO.
pub fn man_page(tool: &Tool, date: &str) -> anyhow::Result<Vec<u8>> {
    let cmd = (tool.command)();
    let after_help = cmd.get_after_help().map(ToString::to_string);
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("Concierge")
        .source(format!("Concierge {}", env!("CARGO_PKG_VERSION")))
        .date(date);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    let (notes, examples) = split_examples(after_help.as_deref().unwrap_or_default());
    if !notes.trim().is_empty() {
        roff.control("SH", ["NOTES"]).control("nf", []);
        for line in notes.lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    if !examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for ex in &examples {
            roff.control("PP", []).text([roman(ex.what.as_str())]);
            roff.control("RS", ["4"]).control("nf", []);
            roff.text([bold(ex.command.as_str())]);
            roff.control("fi", []).control("RE", []);
        }
    }
    out.write_all(roff.to_roff().as_bytes())?;
    man.render_version_section(&mut out)?;

    let mut see_also: Vec<String> = tools()
        .iter()
        .filter(|t| t.name != tool.name)
        .map(|t| format!("{}(1)", t.name))
        .collect();
    see_also.extend(["zabbix_agentd(8)".into(), "zabbix_sender(1)".into()]);
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"])
        .text([roman(see_also.join(", "))]);
    out.write_all(roff.to_roff().as_bytes())?;
    Ok(out)
}

/// The completion script of `tool` for `shell`, and the file name the shell looks it up by.
pub fn completion(tool: &Tool, shell: Shell) -> (String, Vec<u8>) {
    let mut cmd = (tool.command)();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, tool.name, &mut out);
    let file = match shell {
        Shell::Zsh => format!("_{}", tool.name),
        Shell::Fish => format!("{}.fish", tool.name),
        // bash-completion loads completions/<command> on first use.
        _ => tool.name.to_string(),
    };
    (file, out)
}

/// The shells completions are generated for, with their directory under `completions/`.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// Write `man1/<tool>.1` and `completions/{bash,zsh,fish}/…` for every tool under `out`;
/// the files written.
pub fn write_assets(out: &Path, date: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut write = |path: PathBuf, bytes: &[u8]| -> anyhow::Result<()> {
        let dir = path.parent().expect("a file under out");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for tool in tools() {
        write(
            out.join("man1").join(format!("{}.1", tool.name)),
            &man_page(&tool, date)?,
        )?;
        for (shell, dir) in SHELLS {
            let (file, bytes) = completion(&tool, shell);
            write(out.join("completions").join(dir).join(file), &bytes)?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_help_ends_with_two_or_three_examples_that_its_own_cli_accepts() {
        for tool in tools() {
            let mut cmd = (tool.command)();
            let help = cmd.render_help().to_string();
            let after_help = cmd.get_after_help().unwrap().to_string();
            let (_, examples) = split_examples(&after_help);
            assert!(
                (2..=3).contains(&examples.len()),
                "{}: {examples:?}",
                tool.name
            );
            let tail = help.trim_end();
            assert!(
                tail.ends_with(examples.last().unwrap().command.as_str()),
                "{}'s --help does not end with its examples:\n{help}",
                tool.name
            );
            for ex in &examples {
                assert!(!ex.what.is_empty(), "{}: {ex:?} says nothing", tool.name);
                let argv = shell_words(&ex.command).unwrap();
                assert_eq!(argv[0], tool.name, "{ex:?}");
                if let Err(e) = (tool.parse)(&argv) {
                    panic!(
                        "{}: example {:?} does not parse: {e}",
                        tool.name, ex.command
                    );
                }
            }
        }
    }

    #[test]
    fn a_broken_example_is_caught() {
        let tool = &tools()[1];
        let argv = shell_words("concierge-courier all --no-such-flag").unwrap();
        assert!((tool.parse)(&argv).is_err());
    }

    #[test]
    fn shell_words_groups_quotes() {
        assert_eq!(
            shell_words(r#"a -z "x;y" --m 'c s=1' "q\"q" e\ f"#).unwrap(),
            ["a", "-z", "x;y", "--m", "c s=1", "q\"q", "e f"]
        );
        assert!(shell_words("a \"b").is_err());
        assert_eq!(shell_words("a '' b").unwrap(), ["a", "", "b"]);
    }

    #[test]
    fn man_pages_carry_synopsis_options_examples_and_version() {
        for tool in tools() {
            let page = String::from_utf8(man_page(&tool, "2026-12-01").unwrap()).unwrap();
            let cmd = (tool.command)();
            assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", tool.name);
            assert!(page.contains(".TH"), "{}", tool.name);
            for section in [
                "NAME", "SYNOPSIS", "OPTIONS", "NOTES", "EXAMPLES", "VERSION",
            ] {
                assert!(
                    page.contains(&format!(".SH {section}")),
                    "{}: {section}",
                    tool.name
                );
            }
            assert!(page.contains(".SH \"SEE ALSO\""), "{}", tool.name);
            let (_, examples) = split_examples(&cmd.get_after_help().unwrap().to_string());
            for ex in examples {
                // roff escapes every '-' as '\-'.
                assert!(
                    page.contains(&ex.command.replace('-', "\\-")),
                    "{}: {}",
                    tool.name,
                    ex.command
                );
            }
            assert!(page.contains(&concierge_core_version().replace('-', "\\-")));
        }
    }

    fn concierge_core_version() -> String {
        // The git revision part of `-V`, as every tool carries it.
        let v = (tools()[0].command)().get_version().unwrap().to_string();
        v.split_once(" (").map(|(_, r)| r.to_string()).unwrap()
    }

    #[test]
    fn completions_know_the_options() {
        for tool in tools() {
            let cmd = (tool.command)();
            let long = cmd
                .get_arguments()
                .find_map(|a| a.get_long().filter(|l| *l != "help"))
                .unwrap()
                .to_string();
            for (shell, _) in SHELLS {
                let (file, bytes) = completion(&tool, shell);
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains(&long), "{file} lacks --{long}");
                let header = match shell {
                    Shell::Bash => format!("complete -F _{}", tool.name.replace('-', "__")),
                    Shell::Zsh => format!("#compdef {}", tool.name),
                    _ => format!("complete -c {}", tool.name),
                };
                assert!(text.contains(&header), "{file}: no {header:?}\n{text}");
            }
        }
    }
}
