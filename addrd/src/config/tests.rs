#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use super::*;

const MINIMAL: &str = r#"
static-key-file = "addrd.key"
authority-key-file = "authority.key"
allocation-key-file = "allocation.key"
state-file = "state.redb"
[address-plan]
overlay-prefix = "fd01:203:405::/48"
[directory]
ldif-file = "org.ldif"
store-file = "addresses.redb"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/permanet/addrd.toml"))
}

#[test]
fn minimal_config_gets_the_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert_eq!(config.listen.port(), DEFAULT_PORT);
    assert_eq!(config.lease_lifetime, Duration::from_secs(3600));
    assert_eq!(config.max_session_age, Duration::from_secs(12 * 3600));
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.dns.zone.to_string(), "permanet.internal");
    assert!(config.dns.listen.is_empty());
    assert_eq!(config.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(
        config.authority_key_file,
        PathBuf::from("/etc/permanet/authority.key")
    );
    assert!(!config.ipv4_policy.dangerous_allow_private);
    assert_eq!(
        config.plan.user_subnet_id(),
        overlay_proto::addr::DEFAULT_USER_SUBNET_ID
    );
    assert_eq!(
        config.directory,
        DirectoryConfig::Embedded {
            ldif_file: "/etc/permanet/org.ldif".into(),
            store_file: "/etc/permanet/addresses.redb".into(),
        }
    );
}

#[test]
fn six_to_four_plan_and_ldap_backend() {
    let text = MINIMAL
        .replace(
            "overlay-prefix = \"fd01:203:405::/48\"",
            "home-ipv4 = \"8.8.4.4\"\nuser-subnet-id = 7",
        )
        .replace(
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\nstarttls = true\n\
             ca-file = \"ca.pem\"\nbind-dn = \"cn=addrd,ou=services,dc=example,dc=org\"\n\
             bind-password-file = \"/secret/pw\"\nbase-dn = \"dc=example,dc=org\"\ntimeout = 9",
        );
    let config = parse(&text).unwrap();
    assert_eq!(config.plan.overlay().net().to_string(), "2002:808:404::/48");
    assert_eq!(config.plan.user_subnet_id(), 7);
    let DirectoryConfig::Ldap(ldap) = config.directory else {
        panic!("not ldap");
    };
    assert!(ldap.starttls);
    assert_eq!(ldap.ca_file, Some(PathBuf::from("/etc/permanet/ca.pem")));
    assert_eq!(ldap.bind_password_file, PathBuf::from("/secret/pw"));
    assert_eq!(ldap.timeout, Duration::from_secs(9));
}

/// Each case edits the minimal config; the error must name the key and
/// say what is wrong.
#[test]
fn errors_name_file_key_and_problem() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, key, message fragment)
        (
            "static-key-file = \"addrd.key\"\n",
            "",
            "static-key-file",
            "missing",
        ),
        ("state-file = \"state.redb\"\n", "", "state-file", "missing"),
        (
            "static-key-file = \"addrd.key\"",
            "static-key-file = \"\"",
            "static-key-file",
            "must not be empty",
        ),
        (
            "\n[address-plan]",
            "\nlease-lifetime = 10\n[address-plan]",
            "lease-lifetime",
            "out of range 60..=604800",
        ),
        (
            "\n[address-plan]",
            "\nmax-session-age = 600\n[address-plan]",
            "max-session-age",
            "shorter than lease-lifetime",
        ),
        (
            "fd01:203:405::/48",
            "2001:db8::/48",
            "address-plan.overlay-prefix",
            "",
        ),
        (
            "fd01:203:405::/48",
            "fd01:203::/32",
            "address-plan.overlay-prefix",
            "",
        ),
        (
            "overlay-prefix = \"fd01:203:405::/48\"",
            "home-ipv4 = \"192.168.1.1\"",
            "address-plan.home-ipv4",
            "",
        ),
        (
            "overlay-prefix = \"fd01:203:405::/48\"",
            "overlay-prefix = \"fd01:203:405::/48\"\nhome-ipv4 = \"8.8.8.8\"",
            "address-plan.home-ipv4",
            "cannot be used together",
        ),
        (
            "overlay-prefix = \"fd01:203:405::/48\"",
            "",
            "address-plan.overlay-prefix",
            "missing",
        ),
        (
            "overlay-prefix = \"fd01:203:405::/48\"",
            "overlay-prefix = \"fd01:203:405::/48\"\nuser-subnet-id = 70000",
            "address-plan.user-subnet-id",
            "out of range",
        ),
        (
            "overlay-prefix = \"fd01:203:405::/48\"",
            "overlay-prefix = \"fd01:203:405::/48\"\nuser-subnet-id = 0",
            "address-plan.user-subnet-id",
            "",
        ),
        (
            "ldif-file = \"org.ldif\"\n",
            "",
            "directory.ldif-file",
            "missing",
        ),
        (
            "ldif-file = \"org.ldif\"",
            "ldif-file = \"org.ldif\"\nurl = \"ldap://x\"",
            "directory.url",
            "only valid with backend = \"ldap\"",
        ),
        (
            "[directory]",
            "[dns]\nzone = \"bad..zone\"\n[directory]",
            "dns.zone",
            "",
        ),
        (
            "[directory]",
            "[dns]\nttl = 0\n[directory]",
            "dns.ttl",
            "out of range",
        ),
        (
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nurl = \"ldap://h\"\nbase-dn = \"dc=x\"\nbind-dn = \"cn=a,dc=x\"",
            "directory.bind-password-file",
            "missing",
        ),
        (
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nurl = \"http://h\"",
            "directory.url",
            "expected ldap://",
        ),
        (
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nurl = \"ldaps://h\"\nstarttls = true",
            "directory.starttls",
            "already TLS",
        ),
        (
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nurl = \"ldap://h\"\nbase-dn = \" \"",
            "directory.base-dn",
            "must not be empty",
        ),
        (
            "ldif-file = \"org.ldif\"\nstore-file = \"addresses.redb\"",
            "backend = \"ldap\"\nldif-file = \"x\"",
            "directory.ldif-file",
            "only valid with backend = \"embedded\"",
        ),
    ];
    for (from, to, key, fragment) in cases {
        assert!(MINIMAL.contains(from), "{from}");
        let text = MINIMAL.replacen(from, to, 1);
        let err = parse(&text).expect_err(&text);
        assert_eq!(err.key(), Some(*key), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("/etc/permanet/addrd.toml: {key}: ")),
            "{msg}"
        );
        assert!(msg.contains(fragment), "{msg} lacks {fragment:?}");
    }
}

#[test]
fn syntax_and_unknown_keys_keep_the_position() {
    for text in [
        format!("{MINIMAL}\nunknown-key = 1"),
        MINIMAL.replace("state-file = \"state.redb\"", "state-file = 3"),
        format!("{MINIMAL}\n[[["),
        MINIMAL.replace("[directory]", "[directory]\nbackend = \"nis\""),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/permanet/addrd.toml: "), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }
}

#[test]
fn private_ipv4_needs_the_dangerous_flag() {
    let text = MINIMAL.replace(
        "overlay-prefix = \"fd01:203:405::/48\"",
        "home-ipv4 = \"10.0.0.1\"",
    );
    assert!(parse(&text).is_err());
    let text = format!("dangerous-allow-private-ipv4 = true\n{text}");
    let config = parse(&text).unwrap();
    assert!(config.ipv4_policy.dangerous_allow_private);
    assert_eq!(config.plan.overlay().net().to_string(), "2002:a00:1::/48");
}

#[test]
fn the_reference_config_parses() {
    let text = include_str!("../../../configs/addrd.toml");
    let config = Config::parse(text, Path::new("/x/configs/addrd.toml")).unwrap();
    assert_eq!(
        config.directory,
        DirectoryConfig::Embedded {
            ldif_file: "/x/configs/ldap/example-org.ldif".into(),
            store_file: "/x/configs/addrd-addresses.redb".into(),
        }
    );
    assert_eq!(config.listen, DEFAULT_LISTEN);
}
