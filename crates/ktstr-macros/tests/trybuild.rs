//! Compile-time checks of `#[ktstr_test]`: impossible attributes and wrong signatures are
//! errors pointing at the offending token (`compile_fail/*.stderr` hold the exact
//! messages; regenerate with `TRYBUILD=overwrite` after a deliberate change), and a test
//! using every attribute compiles and registers what it says.

#[test]
fn ktstr_test_attributes() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
    t.pass("tests/pass/*.rs");
}
