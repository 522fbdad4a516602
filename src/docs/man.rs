//! The man pages in man/: berth(1), berth-CMD(1) for every command, and berth@.service(8)
//! when units/berth@.service exists. The options, commands, synopses and descriptions come from
//! the clap definitions (rendered by clap_mangen, so they are `--help`'s text); the rest is
//! [`text`](super::text).
//!
//! `cargo test man_pages` fails when a committed page differs from what this renders;
//! `BERTH_UPDATE_MAN=1 cargo test man_pages` (or `make man`) rewrites them.

use super::text::{self, Block, Kind};
use crate::cli::{self, Cli};
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Page {
    /// File name in man/, e.g. "berth-run.1".
    pub file: String,
    pub text: String,
}

/// The command line as the pages describe it: built (so subcommands know their names as
/// "berth run" and "berth-run"), without clap's `help` subcommand.
pub fn root() -> clap::Command {
    let mut c = Cli::command().disable_help_subcommand(true);
    c.build();
    c
}

/// The commands that get a page, in definition order.
fn commands(root: &clap::Command) -> Vec<&clap::Command> {
    root.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .collect()
}

/// Whether the command line has `need`: "import-tar" (a command), "--store" (a global
/// option), "run --boot" or "run -M" (an option of a command).
pub fn has(root: &clap::Command, need: &str) -> bool {
    let mut cmd = root;
    for word in need.split_whitespace() {
        if let Some(long) = word.strip_prefix("--") {
            return cmd.get_arguments().any(|a| {
                a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
            });
        }
        if let Some(short) = word.strip_prefix('-') {
            let short = short.chars().next();
            return cmd.get_arguments().any(|a| a.get_short() == short);
        }
        match cmd.find_subcommand(word) {
            Some(c) => cmd = c,
            None => return false,
        }
    }
    true
}

fn shown<'a>(root: &clap::Command, blocks: &'a [Block]) -> impl Iterator<Item = &'a Block> {
    let root = root.clone();
    blocks
        .iter()
        .filter(move |b| b.needs.iter().all(|n| has(&root, n)))
}

/// Inline markup: `code` bold, *word* italic, the rest roman.
pub fn inlines(s: &str) -> Vec<Inline> {
    let parts: Vec<&str> = s.split('`').collect();
    assert!(parts.len() % 2 == 1, "unbalanced ` in {s:?}");
    let mut out = Vec::new();
    for (i, seg) in parts.iter().enumerate() {
        if i % 2 == 1 {
            out.push(bold(*seg));
            continue;
        }
        let sub: Vec<&str> = seg.split('*').collect();
        assert!(sub.len() % 2 == 1, "unbalanced * in {s:?}");
        for (j, part) in sub.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            out.push(if j % 2 == 1 {
                italic(*part)
            } else {
                roman(*part)
            });
        }
    }
    out
}

fn blocks(roff: &mut Roff, root: &clap::Command, list: &[Block]) {
    for (n, b) in shown(root, list).enumerate() {
        match &b.kind {
            Kind::P(t) => {
                if n > 0 {
                    roff.control("PP", []);
                }
                roff.text(inlines(t));
            }
            Kind::Item(term, t) => {
                roff.control("TP", []);
                roff.text(inlines(term));
                roff.text(inlines(t));
            }
            Kind::Example(what, lines) => {
                if n > 0 {
                    roff.control("PP", []);
                }
                roff.text(inlines(what));
                code(roff, lines);
            }
        }
    }
}

fn code(roff: &mut Roff, lines: &str) {
    roff.control("PP", []);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for l in lines.lines() {
        roff.text([roman(l)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// `berth run [OPTIONS] [COMMAND]...`, from the usage line `--help` prints.
fn usage(cmd: &clap::Command) -> Vec<Inline> {
    let u = cmd.clone().render_usage().to_string();
    let u = u.strip_prefix("Usage: ").unwrap_or(&u).trim().to_owned();
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned();
    match u.strip_prefix(&name) {
        Some(rest) => vec![bold(name), roman(rest)],
        None => vec![roman(u)],
    }
}

fn exit_status(roff: &mut Roff) {
    for (status, meaning) in cli::EXIT_STATUS {
        roff.control("TP", []);
        roff.text([bold(*status)]);
        roff.text([roman(*meaning)]);
    }
}

/// "berth-run(1), machinectl(1)" with the names in bold.
fn see_also(roff: &mut Roff, refs: &[String]) {
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let (name, sect) = r.split_once('(').expect("page(section)");
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(name));
        line.push(roman(format!("({sect}")));
    }
    roff.text(line);
}

/// The first `berth` command line of an example, as words (quotes removed, continuation
/// lines joined); None for lines that run something else.
pub fn berth_lines(lines: &str) -> Vec<Vec<String>> {
    let joined = lines.replace("\\\n", " ");
    joined
        .lines()
        .map(shell_words)
        .filter(|w| w.first().is_some_and(|w| w == "berth"))
        .collect()
}

/// Splits a shell line into words: blanks separate, '...' and "..." quote.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_default();
            }
            (None, ' ' | '\t') => words.extend(cur.take()),
            (None, c) => cur.get_or_insert_default().push(c),
        }
    }
    assert!(quote.is_none(), "unterminated quote in {line:?}");
    words.extend(cur);
    words
}

/// Accumulates roff chunks into one page, with the apostrophe preamble once.
struct Out {
    text: String,
    preamble: String,
}

impl Out {
    fn new() -> Out {
        let preamble = Roff::new().render();
        Out {
            text: preamble.clone(),
            preamble,
        }
    }

    fn man(&mut self, f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        let mut buf = Vec::new();
        f(&mut buf).expect("rendering into memory");
        let s = String::from_utf8(buf).expect("utf-8");
        self.text
            .push_str(s.strip_prefix(&self.preamble).expect("roff preamble"));
    }

    fn roff(&mut self, r: &Roff) {
        self.man(|w| r.to_writer(w));
    }
}

/// No hyphenation and a ragged right margin, as systemd's pages: options and paths stay whole.
fn plain_text() -> Roff {
    let mut r = Roff::new();
    r.control("nh", []).control("ad", ["l"]);
    r
}

/// .TH's date: left blank (the pages change with the code, not on a date), as a zero-width
/// character, since an empty argument would vanish and shift the next ones.
const NO_DATE: &str = "\\&";

fn source(root: &clap::Command) -> String {
    format!("berth {}", root.get_version().unwrap_or_default())
}

/// The unit template's text, when the repository has one.
fn unit_file() -> Option<String> {
    std::fs::read_to_string(unit_path()).ok()
}

pub fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("units/berth@.service")
}

/// Every page, rendered.
pub fn pages() -> Vec<Page> {
    let root = root();
    let unit = unit_file().filter(|_| has(&root, "run --keep-unit"));
    let mut pages = vec![berth_page(&root, unit.is_some())];
    for cmd in commands(&root) {
        pages.push(command_page(&root, cmd));
    }
    if let Some(unit) = unit {
        pages.push(unit_page(&root, &unit));
    }
    pages
}

/// A page's clap_mangen renderer, and the page up to its NAME section.
fn page_start(root: &clap::Command, cmd: &clap::Command, title: String) -> (Man, Out) {
    let man = Man::new(cmd.clone())
        .title(title)
        .date(NO_DATE)
        .manual("berth")
        .source(source(root));
    let mut out = Out::new();
    out.man(|w| man.render_title(w));
    out.roff(&plain_text());
    out.man(|w| man.render_name_section(w));
    (man, out)
}

fn berth_page(root: &clap::Command, has_unit: bool) -> Page {
    let (man, mut out) = page_start(root, root, "BERTH".into());

    let mut r = Roff::new();
    r.control("SH", ["SYNOPSIS"]);
    r.text(usage(root));
    for cmd in commands(root) {
        r.control("br", []);
        r.text(usage(cmd));
    }
    r.control("SH", ["DESCRIPTION"]);
    blocks(&mut r, root, text::DESCRIPTION);
    out.roff(&r);

    out.man(|w| man.render_options_section(w));

    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    for cmd in commands(root) {
        r.control("TP", []);
        r.text(usage(cmd));
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        let page = cmd.get_display_name().unwrap_or(cmd.get_name());
        r.text([roman(format!("{about}. See ")), bold(page), roman("(1).")]);
    }
    r.control("SH", ["EXIT STATUS"]);
    r.text(inlines(text::EXIT_STATUS_INTRO));
    exit_status(&mut r);
    r.control("PP", []);
    r.text(inlines(text::EXIT_STATUS_OTHERS));
    r.control("SH", ["ENVIRONMENT"]);
    blocks(&mut r, root, text::ENVIRONMENT);
    r.control("SH", ["FILES"]);
    blocks(&mut r, root, text::FILES);
    r.control("SH", ["EXAMPLES"]);
    blocks(&mut r, root, text::EXAMPLES);
    let mut refs: Vec<String> = commands(root)
        .iter()
        .map(|c| format!("{}(1)", c.get_display_name().unwrap_or(c.get_name())))
        .collect();
    if has_unit {
        refs.push("berth@.service(8)".into());
    }
    refs.extend(text::SEE_ALSO.iter().map(|s| s.to_string()));
    see_also(&mut r, &refs);
    out.roff(&r);
    Page {
        file: "berth.1".into(),
        text: out.text,
    }
}

/// The examples whose first `berth` line runs `cmd`.
fn examples_for(cmd: &str) -> Vec<Block> {
    text::EXAMPLES
        .iter()
        .filter(|b| match b.kind {
            Kind::Example(_, lines) => berth_lines(lines)
                .first()
                .is_some_and(|w| w.get(1).map(String::as_str) == Some(cmd)),
            _ => false,
        })
        .map(|b| Block {
            needs: b.needs,
            kind: match b.kind {
                Kind::Example(w, l) => Kind::Example(w, l),
                _ => unreachable!(),
            },
        })
        .collect()
}

fn command_page(root: &clap::Command, cmd: &clap::Command) -> Page {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let (man, mut out) = page_start(root, cmd, name.to_uppercase());
    let mut r = Roff::new();
    r.control("SH", ["SYNOPSIS"]);
    r.text(usage(cmd));
    out.roff(&r);
    out.man(|w| man.render_description_section(w));
    if cmd.get_arguments().next().is_some() {
        out.man(|w| man.render_options_section(w));
    }
    let mut r = Roff::new();
    let mut refs = vec!["berth(1)".to_string()];
    if cmd.get_name() == "run" {
        r.control("SH", ["SECURITY DEFAULTS"]);
        r.text([roman(cli::SECURITY_DEFAULTS)]);
        r.control("SH", ["EXIT STATUS"]);
        exit_status(&mut r);
        refs.extend(text::SEE_ALSO.iter().map(|s| s.to_string()));
    }
    let examples = examples_for(cmd.get_name());
    if shown(root, &examples).next().is_some() {
        r.control("SH", ["EXAMPLES"]);
        blocks(&mut r, root, &examples);
    }
    see_also(&mut r, &refs);
    out.roff(&r);
    Page {
        file: format!("{name}.1"),
        text: out.text,
    }
}

fn unit_page(root: &clap::Command, unit: &str) -> Page {
    let mut r = Roff::new();
    r.control(
        "TH",
        ["BERTH@.SERVICE", "8", NO_DATE, &source(root), "berth"],
    );
    r.control("nh", []);
    r.control("ad", ["l"]);
    r.control("SH", ["NAME"]);
    r.text([roman(text::UNIT_NAME)]);
    r.control("SH", ["SYNOPSIS"]);
    r.text(inlines(text::UNIT_SYNOPSIS));
    r.control("SH", ["DESCRIPTION"]);
    blocks(&mut r, root, text::UNIT_DESCRIPTION);
    r.control("SH", ["UNIT FILE"]);
    r.text(inlines(
        "As shipped in units/berth@.service (make install puts its own PREFIX into ExecStart=):",
    ));
    code(&mut r, unit);
    r.control("SH", ["EXAMPLES"]);
    blocks(&mut r, root, text::UNIT_EXAMPLES);
    let refs: Vec<String> = text::UNIT_SEE_ALSO.iter().map(|s| s.to_string()).collect();
    see_also(&mut r, &refs);
    let mut out = Out::new();
    out.roff(&r);
    Page {
        file: "berth@.service.8".into(),
        text: out.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::process::{Command, Stdio};

    fn man_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
    }

    fn is_page(p: &Path) -> bool {
        matches!(p.extension().and_then(|e| e.to_str()), Some("1" | "8"))
    }

    /// The committed pages are what the CLI renders now. BERTH_UPDATE_MAN=1 rewrites them (and
    /// removes pages of commands that no longer exist) instead of failing.
    #[test]
    fn man_pages_are_current() {
        let pages = pages();
        let dir = man_dir();
        let update = std::env::var_os("BERTH_UPDATE_MAN").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for p in &pages {
            let path = dir.join(&p.file);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(p.text.as_str()) {
                if update {
                    std::fs::write(&path, &p.text).unwrap();
                } else {
                    stale.push(p.file.clone());
                }
            }
        }
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if is_page(&path) && !pages.iter().any(|p| p.file == name) {
                if update {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    stale.push(format!("{name} (no such page any more)"));
                }
            }
        }
        assert!(
            stale.is_empty(),
            "man pages are stale: {stale:?}; run `make man` (BERTH_UPDATE_MAN=1 cargo test \
             man_pages) and commit man/"
        );
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// groff renders every page with all warnings on (-ww) and prints none; the plain-text
    /// rendering of berth-CMD(1) names every option of CMD.
    #[test]
    fn man_pages_render_cleanly_and_name_every_option() {
        let tmp = TempDir(std::env::temp_dir().join(format!("berth-man-{}", std::process::id())));
        std::fs::create_dir_all(&tmp.0).unwrap();
        let root = root();
        for p in pages() {
            let path = tmp.0.join(&p.file);
            std::fs::write(&path, &p.text).unwrap();
            let out = Command::new("groff")
                .args(["-man", "-ww", "-z", "-Tutf8"])
                .arg(&path)
                .stdin(Stdio::null())
                .output()
                .expect("running groff (groff-base, in .ci/deps)");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && err.is_empty(), "{}: {err}", p.file);

            let out = Command::new("groff")
                .args(["-man", "-Tascii", "-P-cbou", "-rLL=200n"])
                .arg(&path)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success());
            let rendered = String::from_utf8(out.stdout).unwrap();
            let cmd = if p.file == "berth.1" {
                Some(&root)
            } else {
                commands(&root).into_iter().find(|c| {
                    c.get_display_name().map(|n| format!("{n}.1")) == Some(p.file.clone())
                })
            };
            if let Some(cmd) = cmd {
                for a in cmd.get_arguments() {
                    if let Some(long) = a.get_long() {
                        assert!(
                            rendered.contains(&format!("--{long}")),
                            "{}: no --{long}",
                            p.file
                        );
                    }
                    if let Some(short) = a.get_short() {
                        assert!(
                            rendered.contains(&format!("-{short}")),
                            "{}: no -{short}",
                            p.file
                        );
                    }
                }
                if let Some(about) = cmd.get_about() {
                    assert!(
                        rendered.contains(&about.to_string()),
                        "{}: no about",
                        p.file
                    );
                }
            }
            if p.file == "berth.1" {
                for c in commands(&root) {
                    assert!(
                        rendered.contains(&format!("berth {}", c.get_name())),
                        "berth.1 lacks {}",
                        c.get_name()
                    );
                }
                for section in [
                    "EXIT STATUS",
                    "ENVIRONMENT",
                    "FILES",
                    "EXAMPLES",
                    "SEE ALSO",
                ] {
                    assert!(rendered.contains(section), "berth.1 lacks {section}");
                }
            }
        }
    }

    /// Every `berth ...` line in a shown example parses with the real command line, and every
    /// --option named in shown text exists.
    #[test]
    fn man_pages_examples_and_options_exist() {
        let root = root();
        let mut texts: Vec<String> = Vec::new();
        let mut checked = 0;
        let mut lists = vec![
            text::DESCRIPTION,
            text::ENVIRONMENT,
            text::FILES,
            text::EXAMPLES,
        ];
        if pages().iter().any(|p| p.file == "berth@.service.8") {
            lists.extend([text::UNIT_DESCRIPTION, text::UNIT_EXAMPLES]);
        }
        for list in lists {
            for b in shown(&root, list) {
                match &b.kind {
                    Kind::P(t) => texts.push(t.to_string()),
                    Kind::Item(a, t) => texts.extend([a.to_string(), t.to_string()]),
                    Kind::Example(w, lines) => {
                        texts.extend([w.to_string(), lines.to_string()]);
                        for words in berth_lines(lines) {
                            if let Err(e) = Cli::try_parse_from(&words) {
                                panic!("example {words:?} does not parse: {e}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked >= 3, "only {checked} example lines checked");
        texts.push(cli::SECURITY_DEFAULTS.into());
        let longs: Vec<String> = std::iter::once(&root)
            .chain(commands(&root))
            .flat_map(|c| c.get_arguments())
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for t in &texts {
            for (i, _) in t.match_indices("--") {
                let name: String = t[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() {
                    assert!(
                        longs.contains(&name),
                        "--{name} in {t:?} is no option of berth"
                    );
                }
            }
        }
    }

    #[test]
    fn man_pages_markup_and_shell_words() {
        assert_eq!(
            shell_words(r#"berth run -D /x /bin/sh -c 'echo "a b"' "c d""#),
            [
                "berth",
                "run",
                "-D",
                "/x",
                "/bin/sh",
                "-c",
                "echo \"a b\"",
                "c d"
            ]
        );
        assert_eq!(
            berth_lines("systemctl start x\nberth run \\\n    -D /x true"),
            [vec!["berth", "run", "-D", "/x", "true"]]
        );
        let i = inlines("`berth@`*NAME*`.service` x");
        assert_eq!(
            i,
            [
                bold("berth@"),
                italic("NAME"),
                bold(".service"),
                roman(" x")
            ]
        );
        let root = root();
        assert!(has(&root, "run"));
        assert!(has(&root, "run -D"));
        assert!(has(&root, "run --private-users"));
        assert!(!has(&root, "run --no-such-option"));
        assert!(!has(&root, "no-such-command"));
    }

    /// Every capability berth grants by default is named in the security defaults text.
    #[test]
    fn man_pages_security_defaults_name_the_default_capabilities() {
        for cap in crate::spec::caps::DEFAULT {
            let name = crate::spec::caps::name(*cap);
            let short = name.trim_start_matches("CAP_");
            assert!(
                cli::SECURITY_DEFAULTS.contains(short),
                "{name} is granted by default but not named in SECURITY_DEFAULTS"
            );
        }
    }

    /// berth@.service(8) names only settings the unit file has.
    #[test]
    fn man_pages_unit_page_matches_the_unit_file() {
        let Some(unit) = unit_file() else {
            assert!(
                !pages().iter().any(|p| p.file.ends_with(".8")),
                "a unit page without units/berth@.service"
            );
            return;
        };
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for b in text::UNIT_DESCRIPTION {
            let t = match &b.kind {
                Kind::Item(term, _) => term,
                _ => continue,
            };
            let setting = t.trim_matches('`');
            if setting.contains('=') {
                assert!(
                    lines.contains(&setting),
                    "berth@.service(8) describes {setting}, which {} does not have",
                    unit_path().display()
                );
            }
        }
    }
}
