//! Lays out the release binary's code in the order of `link/order.txt`
//! (the functions a run executes, side by side), so that the kernel's 64 KiB
//! fault-around maps a few windows of code rather than all of it: fewer
//! page faults and a smaller resident set (issue 6). `link/gen-order.sh`
//! regenerates the list. Only rust-lld, the default linker of
//! x86_64-unknown-linux-gnu, understands the option; other targets skip it.

fn main() {
    println!("cargo::rerun-if-changed=link/order.txt");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let order = std::path::Path::new(&dir).join("link/order.txt");
        println!(
            "cargo::rustc-link-arg-bin=daemonize=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bin=daemonize=-Wl,--no-warn-symbol-ordering");
    }
}
