//! `tunneld` — placeholder binary. The daemon is specified in issue #3 and
//! is not implemented yet; the crate exists so the workspace layout is final.

fn main() {
    eprintln!("tunneld: not implemented yet (issue #3); see README.md");
    std::process::exit(2);
}
