//! `addrd` — placeholder binary. The daemon is specified in issue #4 and
//! is not implemented yet; the crate exists so the workspace layout is final.

fn main() {
    eprintln!("addrd: not implemented yet (issue #4); see README.md");
    std::process::exit(2);
}
