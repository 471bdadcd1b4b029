use super::*;

fn scanner() -> Scanner {
    Scanner::with_builtin(vec![Secret {
        name: "openai".into(),
        value: b"hutch-test-secret-Value/42+x".to_vec(),
        action: Action::Block,
    }])
    .expect("scanner")
}

fn ids(s: &Scanner, text: &str) -> Vec<String> {
    s.scan(text.as_bytes())
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

fn assert_hit(rule: &str, text: &str) {
    let s = scanner();
    let found = ids(&s, text);
    assert!(
        found.iter().any(|id| id == rule),
        "{rule} not found in {text:?}: {found:?}"
    );
}

fn assert_clean(text: &str) {
    let s = scanner();
    let found = ids(&s, text);
    assert!(found.is_empty(), "false positive in {text:?}: {found:?}");
}

// Test tokens are assembled at run time so this file holds no secret-shaped literals.
fn rep(c: &str, n: usize) -> String {
    c.repeat(n)
}

#[test]
fn aws_access_key_id() {
    assert_hit(
        "aws-access-key-id",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
    );
    assert_hit("aws-access-key-id", "key=ASIAY34FZKBOKMUTVV7A&x=1");
    assert_clean("AKIAIOSFODNN7EXAMPLEX is too long and AKIAshort is too short");
    assert_clean("the word pakistani or AKIA in prose");
}

#[test]
fn github_tokens() {
    let body = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5";
    assert_eq!(body.len(), 36);
    for (prefix, rule) in [
        ("ghp_", "github-pat"),
        ("gho_", "github-oauth"),
        ("ghs_", "github-app-token"),
        ("ghu_", "github-app-token"),
        ("ghr_", "github-refresh-token"),
    ] {
        assert_hit(rule, &format!("Authorization: token {prefix}{body}\r\n"));
    }
    let fine = format!(
        "github_pat_{}_{}",
        rep("A1b2", 5) + "Zz",
        rep("c3D4", 14) + "xyz"
    );
    assert_eq!(fine.len() - "github_pat_".len(), 82);
    assert_hit("github-fine-grained-pat", &format!("GH_TOKEN={fine}"));
    assert_clean("see ghp_ docs and gho_home; ghp_short123");
}

#[test]
fn gitlab_slack_stripe() {
    assert_hit(
        "gitlab-pat",
        &format!("PRIVATE-TOKEN: glpat-{}", "xY1-zZ2_aB3cD4eF5gH6"),
    );
    assert_hit(
        "slack-token",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    );
    assert_hit("slack-token", "xoxp-1234567890-abcdefghij");
    assert_clean("xoxb-not-a-token-here at all");
    assert_hit(
        "stripe-secret-key",
        &format!(
            "stripe.api_key = '{}'",
            "sk_live_".to_string() + "4eC39HqLyjWDarjtT1zdp7dc"
        ),
    );
    assert_hit(
        "stripe-secret-key",
        &format!("{}{}", "rk_live_", "51H8dMbLkdfjs8dfKJHd9sdf"),
    );
    assert_clean("sk_test_4eC39HqLyjWDarjtT1zdp7dc is a test key");
}

#[test]
fn openai_and_anthropic() {
    let openai = format!("sk-{}", "Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx2");
    assert_hit("openai-api-key", &format!("OPENAI_API_KEY={openai}"));
    let proj = format!(
        "sk-proj-{}",
        "q8Z_r2Lm-9XkT4vB7nC1aS5dF3gH6jK0pW2eR4tY7uI9oP1lZ3xC5vB8nM0qW2eR4t"
    );
    assert_hit("openai-api-key", &format!("Bearer {proj}"));
    let ant = format!(
        "sk-ant-api03-{}",
        "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa-_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa12345AA"
    );
    let found = ids(&scanner(), &format!("X-Claude: {ant}"));
    assert_eq!(
        found,
        vec!["anthropic-api-key".to_string()],
        "anthropic key reported once, as anthropic"
    );
    // Prose and identifiers with `sk-`.
    assert_clean("a risk-management-framework-for-large-organisations document");
    assert_clean("desk-booking-service-production-eu-west-deployment");
    assert_clean("sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1");
}

#[test]
fn google_private_key_jwt() {
    assert_hit(
        "google-api-key",
        &format!("key=AIza{}", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    );
    assert_clean("AIza is a prefix and AIzaShort too");
    assert_hit(
        "private-key",
        "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n",
    );
    assert_hit("private-key", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    assert_hit("private-key", "\"-----BEGIN PRIVATE KEY-----\\nMIIEvQ\"");
    assert_clean("-----BEGIN CERTIFICATE-----\nMIIB\n-----BEGIN PUBLIC KEY-----");
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let found = ids(&scanner(), &format!("Authorization: Bearer {jwt}"));
    assert_eq!(found, vec!["jwt".to_string()]);
    assert_clean("eyJhbGciOiJIUzI1NiJ9 alone is just base64 JSON");
}

#[test]
fn generic_keyword_entropy() {
    assert_hit("generic-secret", "DB_PASSWORD=Zk8qP2vL9xR4tW7mN3bC");
    assert_hit(
        "generic-secret",
        "{\"client_secret\": \"q7Hx9LmP2vRt4Wz8Kd3N\"}",
    );
    assert_hit("generic-secret", "apiKey: 'f83kd9Qm2LxP0zR7tVb4Yc'");
    assert_hit(
        "generic-secret",
        "export AUTH_TOKEN=\"a9f8e7d6c5b4a3f2e1d0c9b8\"\n",
    );
    // Low entropy, no digits, code, prose.
    assert_clean("password = aaaaaaaaaaaaaaaaaaaaaaaa1");
    assert_clean("let token = get_token_from_environment(ctx);");
    assert_clean("The auth service validates the token before the secret store is read.");
    assert_clean("password: hunter2");
    assert_clean("token_count = 1234");
}

#[test]
fn registered_secret_in_every_encoding() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let s = scanner();
    let v = "hutch-test-secret-Value/42+x";
    let cases = [
        (format!("GET /x?k={v} HTTP/1.1"), Encoding::Raw),
        (
            format!(
                "Authorization: Basic {}",
                STANDARD.encode(format!("user:{v}"))
            ),
            Encoding::Base64,
        ),
        (
            format!("data={}", URL_SAFE.encode(format!("ab{v}cd"))),
            Encoding::Base64,
        ),
        (format!("q={}", STANDARD.encode(v)), Encoding::Base64),
        (
            "q=hutch-test-secret-Value%2F42%2Bx&y=1".to_string(),
            Encoding::Url,
        ),
        (
            "q=hutch-test-secret-Value%2f42%2bx".to_string(),
            Encoding::Url,
        ),
        (format!("h={}", hex::encode(v)), Encoding::Hex),
        (format!("h={}", hex::encode_upper(v)), Encoding::Hex),
    ];
    for (text, enc) in cases {
        let f = s.scan(text.as_bytes());
        assert!(
            f.iter()
                .any(|f| f.rule_id == "secret:openai" && f.encoding == Some(enc)),
            "{enc:?} not found in {text:?}: {f:?}"
        );
        assert!(Scanner::blocks(&f));
    }
    assert_clean("hutch-test-secret-Value/43+x is a different value");
}

#[test]
fn findings_carry_no_secret_text() {
    let s = scanner();
    let text = "x hutch-test-secret-Value/42+x y";
    let f = s.scan(text.as_bytes());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].offset, 2);
    assert_eq!(f[0].len, "hutch-test-secret-Value/42+x".len());
    let dbg = format!("{f:?} {s:?}");
    assert!(!dbg.contains("secret-Value"), "{dbg}");
    let json = serde_json::to_string(&f).expect("json");
    assert!(!json.contains("secret-Value"), "{json}");
}

#[test]
fn actions_and_custom_rules() {
    let rules = vec![
        builtin_rules().remove(0).with_action(Action::Log),
        Rule::new("internal-ticket", Action::Block, &["TCK-"], r"TCK-[0-9]{6}"),
    ];
    let s = Scanner::new(rules, vec![]).expect("scanner");
    let f = s.scan(b"AKIAIOSFODNN7EXAMPLE and TCK-123456");
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].rule_id.as_str(), f[0].action),
        ("aws-access-key-id", Action::Log)
    );
    assert_eq!(
        (f[1].rule_id.as_str(), f[1].action),
        ("internal-ticket", Action::Block)
    );
    assert!(Scanner::blocks(&f));
    assert!(!Scanner::blocks(&f[..1]));
    assert!(Scanner::new(vec![Rule::new("bad", Action::Block, &["x"], "(")], vec![]).is_err());
    let short = Secret {
        name: "s".into(),
        value: b"abc".to_vec(),
        action: Action::Block,
    };
    assert!(Scanner::new(vec![], vec![short]).is_err());
}

#[test]
fn entropy_values() {
    assert_eq!(entropy(b""), 0.0);
    assert_eq!(entropy(b"aaaa"), 0.0);
    assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
}

#[test]
fn overlapping_patterns_are_all_seen() {
    // A secret that starts inside a keyword, one that starts with a rule prefix, and a rule
    // prefix inside a secret.
    let secrets = vec![
        Secret {
            name: "a".into(),
            value: b"oken-Xy12-value".to_vec(),
            action: Action::Log,
        },
        Secret {
            name: "b".into(),
            value: b"sk-short-registered".to_vec(),
            action: Action::Block,
        },
        Secret {
            name: "c".into(),
            value: b"zz-AKIAIOSFODNN7EXAMPLE".to_vec(),
            action: Action::Block,
        },
    ];
    let s = Scanner::with_builtin(secrets).expect("scanner");
    let f = s.scan(b"token-Xy12-value sk-short-registered zz-AKIAIOSFODNN7EXAMPLE");
    let got: Vec<(&str, usize)> = f.iter().map(|f| (f.rule_id.as_str(), f.offset)).collect();
    assert!(got.contains(&("secret:a", 1)), "{got:?}");
    assert!(got.contains(&("secret:b", 17)), "{got:?}");
    assert!(got.contains(&("secret:c", 37)), "{got:?}");
    assert!(got.contains(&("aws-access-key-id", 40)), "{got:?}");
}

#[test]
fn keyword_spellings() {
    let v = keyword_variants("api_key");
    for k in [
        "api_key", "API_KEY", "Api_Key", "api-key", "API-KEY", "apikey", "APIKEY", "ApiKey",
        "apiKey",
    ] {
        assert!(v.iter().any(|x| x == k), "{k} missing from {v:?}");
    }
    assert_hit("generic-secret", "clientSecret=Zk8qP2vL9xR4tW7mN3bC");
    assert_hit("generic-secret", "X-Api-Key: Zk8qP2vL9xR4tW7mN3bC\r\n");
    assert_hit("generic-secret", "PRIVATE_KEY=Zk8qP2vL9xR4tW7mN3bC");
}

#[test]
fn percent_decoding_catches_fully_escaped_secrets() {
    assert_eq!(percent_decode(b"a%2Db%2fc%zz%4"), b"a-b/c%zz%4".to_vec());
    let s = scanner();
    let escaped: String = "hutch-test-secret-Value/42+x"
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    assert!(s.scan(escaped.as_bytes()).is_empty());
    let f = s.scan_decoding(format!("k={escaped}").as_bytes());
    assert!(f.iter().any(|f| f.rule_id == "secret:openai"), "{f:?}");
    let f = s.scan_decoding(b"x=ghp%5FaB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
    assert!(f.iter().any(|f| f.rule_id == "github-pat"), "{f:?}");
}

#[test]
fn redaction_for_logs() {
    let s = scanner();
    let token = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
    let text = format!("/upload/{token}/x/hutch-test-secret-Value/42+x/end");
    assert_eq!(
        s.redact(&text),
        "/upload/[REDACTED:github-pat]/x/[REDACTED:secret:openai]/end"
    );
    assert_eq!(s.redact("/plain/path"), "/plain/path");
}

#[test]
fn many_rules_and_secrets_span_several_passes() {
    let mut rules = builtin_rules();
    for i in 0..40 {
        rules.push(Rule::new(
            &format!("custom-{i}"),
            Action::Block,
            &[&format!("CX{i:02}-")],
            &format!("CX{i:02}-[0-9]{{6}}"),
        ));
    }
    let secrets: Vec<Secret> = (0..30)
        .map(|i| Secret {
            name: format!("s{i}"),
            value: format!("registered-value-{i:03}-Zq").into_bytes(),
            action: Action::Block,
        })
        .collect();
    let s = Scanner::new(rules, secrets).expect("scanner");
    let dbg = format!("{s:?}");
    let passes: usize = dbg
        .split("passes: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("passes");
    assert!(passes >= 4, "{dbg}");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(" CX{i:02}-123456"));
    }
    for i in 0..30 {
        text.push_str(&format!(" registered-value-{i:03}-Zq"));
    }
    text.push_str(" AKIAIOSFODNN7EXAMPLE DB_PASSWORD=Zk8qP2vL9xR4tW7mN3bC");
    let found = s.scan(text.as_bytes());
    for i in 0..40 {
        assert!(
            found.iter().any(|f| f.rule_id == format!("custom-{i}")),
            "custom-{i}"
        );
    }
    for i in 0..30 {
        assert!(
            found.iter().any(|f| f.rule_id == format!("secret:s{i}")),
            "s{i}"
        );
    }
    assert!(found.iter().any(|f| f.rule_id == "aws-access-key-id"));
    assert!(found.iter().any(|f| f.rule_id == "generic-secret"));
    assert!(
        found.windows(2).all(|w| w[0].offset <= w[1].offset),
        "sorted by offset"
    );
}
