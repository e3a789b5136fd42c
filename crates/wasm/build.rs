//! Links the host binary as a non-PIE executable: a cold start then has no
//! relative relocations for the dynamic loader to apply.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
