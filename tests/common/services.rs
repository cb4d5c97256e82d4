//! The real services of the scale-out tests (PostgreSQL, S3), as `scripts/services.sh start`
//! describes them in its env file. Without them a test is skipped loudly, except under CI
//! (`BATCHMIRROR_REQUIRE_SERVICES`), where a missing service fails it.

/// Whether the environment says the services must be there.
fn required() -> bool {
    std::env::var_os("BATCHMIRROR_REQUIRE_SERVICES").is_some_and(|v| !v.is_empty() && v != "0")
}

fn service(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if required() => panic!(
            "{var} is not set but BATCHMIRROR_REQUIRE_SERVICES is: start {what} with \
             scripts/services.sh start and source its env file"
        ),
        _ => {
            eprintln!(
                "SKIPPED (no {what}: run scripts/services.sh start and source \
                 `scripts/services.sh env`)"
            );
            None
        }
    }
}

/// The PostgreSQL server's URL (`BATCHMIRROR_TEST_PG_URL`), or `None` after a loud skip line.
pub fn pg_url() -> Option<String> {
    service("BATCHMIRROR_TEST_PG_URL", "PostgreSQL")
}

/// The S3 bucket and prefix (`BATCHMIRROR_TEST_S3_URL`, `s3://bucket/prefix`; endpoint and
/// credentials are in the standard `AWS_*` variables), or `None` after a loud skip line.
pub fn s3_url() -> Option<String> {
    service("BATCHMIRROR_TEST_S3_URL", "S3")
}
