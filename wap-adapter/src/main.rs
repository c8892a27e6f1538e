//! `wap-adapter` — placeholder binary. The daemon is specified in issue #5 and
//! is not implemented yet; the crate exists so the workspace layout is final.

fn main() {
    eprintln!("wap-adapter: not implemented yet (issue #5); see README.md");
    std::process::exit(2);
}
