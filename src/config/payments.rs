//! The `payments` section: prepaid credits sold through x402 (the feature is
//! `crate::payments`); its JSON model and its validation. Every offer a 402 makes comes from
//! here, never from the request: the packs (what a payment buys, on which network, in which
//! asset, to whom), the resource they are sold for, and the facilitator that verifies and
//! settles payments (an Envoy cluster, called with `dispatch_http_call`).

use serde::Deserialize;

use crate::duration::parse_ms;
use crate::names::{valid_cluster, valid_name, CLUSTER_RULE};
use crate::paymentauth;
use crate::x402::{self, Requirements, RequirementsV1, Resource};

use super::errors::ConfigError;
use super::events::split_url;
use super::plan::MAX_REQUESTS;
use super::secret::{authorization, valid_env_name, Env, Secret, MAX_ENV_NAME_LEN};

/// Most packs a configuration may offer (each is one offer of every curable 402).
pub const MAX_PACKS: usize = 8;
/// Default and longest facilitator timeout (each of `/verify` and `/settle`).
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Longest `max_timeout_seconds` of a pack: an authorization valid longer is refused (its
/// replay claim is kept until it expires).
pub const MAX_AUTHORIZATION_SECONDS: u64 = 3_600;
/// Longest `extra` of a pack, as JSON.
pub const MAX_EXTRA: usize = 1_024;
/// Longest `resource.description` and `resource.mime_type`.
pub const MAX_DESCRIPTION: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayments {
    pub facilitator: RawFacilitator,
    pub resource: RawResource,
    pub packs: Vec<RawPack>,
    /// Also offer the packs as HTTP Payment challenges (`WWW-Authenticate: Payment`).
    #[serde(default)]
    pub http_payment: Option<RawHttpPayment>,
    /// Offer and accept x402 payments (default true); false: HTTP Payment challenges only.
    #[serde(default)]
    pub x402: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpPayment {
    /// The challenges' protection space (`api.example.com`).
    pub realm: String,
    /// The environment variable of the Wasm VM holding the secret challenge ids are HMACs
    /// under (never inline: the plugin configuration is visible in `/config_dump`).
    pub secret_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFacilitator {
    pub cluster: String,
    /// `http(s)://host[:port]/base`: the `:authority` of the calls, and the path `/verify`,
    /// `/settle` and `/supported` are under.
    pub url: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub authorization: Option<String>,
    #[serde(default)]
    pub authorization_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPack {
    pub name: String,
    pub credits: u64,
    #[serde(default)]
    pub scheme: Option<String>,
    pub network: String,
    /// The network's x402 v1 name (`base-sepolia`): with it, the pack is also offered to v1
    /// clients (`accepts` in the 402 body) and `X-PAYMENT` on that network is read.
    #[serde(default)]
    pub v1_network: Option<String>,
    pub asset: String,
    pub amount: String,
    pub pay_to: String,
    #[serde(default)]
    pub max_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A credit pack: what one payment buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    pub name: String,
    /// Credits added to the payer's balance.
    pub credits: u64,
    /// The offer, as `accepts` lists it and as a v2 payment echoes it.
    pub offer: Requirements,
    pub v1_network: Option<String>,
}

/// The validated `payments` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payments {
    pub cluster: String,
    pub authority: String,
    /// The base path (no trailing `/`): calls go to `<base>/verify` and `<base>/settle`.
    pub base_path: String,
    pub timeout_ms: u64,
    pub authorization: Option<Secret>,
    pub resource: Resource,
    pub packs: Vec<Pack>,
    /// `PAYMENT-REQUIRED` (v2) of a curable 402: base64 JSON, rendered once.
    pub required_header: String,
    /// The x402 v1 members of a curable 402's body (`x402Version`, `error`, `accepts`).
    pub v1_body: x402::PaymentRequiredV1,
    /// The packs offered as HTTP Payment challenges too.
    pub http_payment: Option<HttpPayment>,
    /// x402 payments offered and read (`payments.x402`, default true). Without, an x402
    /// payment header is removed unread: an authorization made for a consumer's HTTP Payment
    /// challenge cannot be redeemed by another consumer as an x402 payment.
    pub x402: bool,
}

impl Payments {
    /// The `PAYMENT-REQUIRED` value of a curable 402, if x402 is offered.
    pub fn x402_offers(&self) -> Option<&str> {
        self.x402.then_some(self.required_header.as_str())
    }
}

/// The HTTP Payment scheme's settings (`payments.http_payment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPayment {
    pub realm: String,
    /// The HMAC key of challenge ids.
    pub secret: Secret,
    /// Per pack (as `packs` lists them): what its challenges say, for the packs on an EVM
    /// chain (`eip155:<id>`); `None` for the others, not offered this way.
    pub requests: Vec<Option<PackChallenge>>,
}

/// What every challenge of a pack says, rendered once with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackChallenge {
    /// The `request` parameter (base64url of the JCS charge).
    pub request: String,
    pub chain_id: u64,
    /// The `description` parameter (and the charge's).
    pub description: String,
}

/// Shortest secret of `http_payment.secret_env`, in bytes (HMAC-SHA256's output size).
pub const MIN_SECRET_LEN: usize = 32;
/// Longest `http_payment.realm`.
pub const MAX_REALM_LEN: usize = 128;

fn http_payment(raw: RawHttpPayment, packs: &[Pack], env: Env) -> Result<HttpPayment, ConfigError> {
    let err = |field: &str, why: String| {
        Err(ConfigError(format!("payments.http_payment.{field}: {why}")))
    };
    let realm_ok = !raw.realm.is_empty()
        && raw.realm.len() <= MAX_REALM_LEN
        && paymentauth::quotable(&raw.realm)
        && !raw.realm.contains('|');
    if !realm_ok {
        return err(
            "realm",
            format!(
                "1-{MAX_REALM_LEN} characters of visible ASCII and spaces, without `\"`, `\\` or `|` (e.g. \"api.example.com\")"
            ),
        );
    }
    if !valid_env_name(&raw.secret_env) {
        return err(
            "secret_env",
            format!(
                "must be the name of an environment variable (1-{MAX_ENV_NAME_LEN} characters \
                 of A-Z a-z 0-9 _, not starting with a digit)"
            ),
        );
    }
    let name = &raw.secret_env;
    let secret = match env(name) {
        Some(value) if value.len() >= MIN_SECRET_LEN => value,
        Some(_) => {
            return err(
                "secret_env",
                format!(
                    "environment variable `{name}` holds fewer than {MIN_SECRET_LEN} bytes (use \
                     32 random bytes or more, e.g. `openssl rand -hex 32`)"
                ),
            )
        }
        None => {
            return err(
                "secret_env",
                format!(
                    "environment variable `{name}` is not set in the Wasm VM (Envoy passes it with \
                     vm_config.environment_variables)"
                ),
            )
        }
    };
    let requests: Vec<Option<PackChallenge>> = packs
        .iter()
        .map(|pack| {
            let chain = paymentauth::chain_id(&pack.offer.network)?;
            let description = format!("{} credits", pack.credits);
            let request = paymentauth::ChargeRequest {
                amount: pack.offer.amount.clone(),
                currency: pack.offer.asset.clone(),
                description: Some(description.clone()),
                external_id: Some(pack.name.clone()),
                method_details: paymentauth::MethodDetails {
                    chain_id: chain,
                    credential_types: vec![paymentauth::AUTHORIZATION_TYPE.into()],
                    permit2_address: paymentauth::PERMIT2.into(),
                },
                recipient: pack.offer.pay_to.clone(),
            };
            Some(PackChallenge {
                request: request.encode(),
                chain_id: chain,
                description,
            })
        })
        .collect();
    if requests.iter().all(Option::is_none) {
        return err(
            "realm",
            "no pack is on an EVM chain (`eip155:<chain id>`): the HTTP Payment scheme's `evm` \
             method has nothing to offer"
                .into(),
        );
    }
    Ok(HttpPayment {
        realm: raw.realm,
        secret: Secret(secret),
        requests,
    })
}

fn hex(text: &str, digits: usize) -> bool {
    text.len() == 2 + digits
        && text.starts_with("0x")
        && text.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// CAIP-2: `namespace:reference` (`eip155:8453`).
fn caip2(text: &str) -> bool {
    let Some((namespace, reference)) = text.split_once(':') else {
        return false;
    };
    (3..=8).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && (1..=32).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn compile_pack(i: usize, raw: RawPack, packs: &[Pack]) -> Result<Pack, ConfigError> {
    let err =
        |member: &str, why: &str| Err(ConfigError(format!("payments.packs[{i}].{member}: {why}")));
    if !valid_name(&raw.name) {
        return err(
            "name",
            "1-64 characters of letters, digits, `-`, `_` and `.`",
        );
    }
    if packs.iter().any(|p| p.name == raw.name) {
        return err("name", "another pack has this name");
    }
    if raw.credits == 0 || raw.credits > MAX_REQUESTS {
        return err("credits", &format!("from 1 to {MAX_REQUESTS}"));
    }
    let scheme = raw.scheme.unwrap_or_else(|| "exact".into());
    if scheme != "exact" {
        return err("scheme", "only `exact` (EIP-3009 transfers) is supported");
    }
    if !caip2(&raw.network) {
        return err("network", "a CAIP-2 network id like \"eip155:8453\"");
    }
    if let Some(v1) = &raw.v1_network {
        if !valid_name(v1) {
            return err(
                "v1_network",
                "an x402 v1 network name like \"base-sepolia\"",
            );
        }
    }
    if !hex(&raw.asset, 40) {
        return err(
            "asset",
            "the token contract's address (0x and 40 hex digits)",
        );
    }
    if !hex(&raw.pay_to, 40) {
        return err("pay_to", "an address (0x and 40 hex digits)");
    }
    let amount_ok = (1..=78).contains(&raw.amount.len())
        && raw.amount.bytes().all(|b| b.is_ascii_digit())
        && raw.amount.bytes().any(|b| b != b'0');
    if !amount_ok {
        return err(
            "amount",
            "the price in the asset's atomic units: a decimal integer above 0 (at most 78 digits)",
        );
    }
    let max_timeout_seconds = raw.max_timeout_seconds.unwrap_or(60);
    if !(1..=MAX_AUTHORIZATION_SECONDS).contains(&max_timeout_seconds) {
        return err(
            "max_timeout_seconds",
            &format!("from 1 to {MAX_AUTHORIZATION_SECONDS}"),
        );
    }
    if let Some(extra) = &raw.extra {
        if serde_json::to_vec(extra).map_or(usize::MAX, |v| v.len()) > MAX_EXTRA {
            return err("extra", &format!("at most {MAX_EXTRA} bytes of JSON"));
        }
    }
    // An EVM `exact` payment is an EIP-3009 authorization signed over the token's EIP-712
    // domain: clients and facilitators take its name and version from here.
    let domain = |member: &str| {
        raw.extra
            .as_ref()
            .and_then(|e| e.get(member))
            .is_some_and(|v| v.as_str().is_some_and(|t| !t.is_empty()))
    };
    if raw.network.starts_with("eip155:") && !(domain("name") && domain("version")) {
        return err(
            "extra",
            "an EVM pack names its token's EIP-712 domain: {\"name\": \"USD Coin\", \"version\": \"2\"} (the token contract's own)",
        );
    }
    // A v1 payment names no pack: it is matched by network, payee and amount.
    let alike = |p: &Pack| {
        p.offer.network == raw.network
            && p.offer.asset.eq_ignore_ascii_case(&raw.asset)
            && p.offer.pay_to.eq_ignore_ascii_case(&raw.pay_to)
            && p.offer.amount == raw.amount
    };
    // A v1 payment names no asset either: its network, payee and amount must tell packs apart.
    let alike_v1 = |p: &Pack| {
        raw.v1_network.is_some()
            && p.v1_network == raw.v1_network
            && p.offer.pay_to.eq_ignore_ascii_case(&raw.pay_to)
            && p.offer.amount == raw.amount
    };
    if let Some(other) = packs.iter().find(|p| alike_v1(p)) {
        return err(
            "v1_network",
            &format!(
                "pack `{}` has the same v1_network, pay_to and amount: an x402 v1 payment (which names no asset) could not say which it buys",
                other.name
            ),
        );
    }
    if let Some(other) = packs.iter().find(|p| alike(p)) {
        return err(
            "amount",
            &format!(
                "pack `{}` has the same network, asset, pay_to and amount: a payment could not say which it buys",
                other.name
            ),
        );
    }
    Ok(Pack {
        name: raw.name,
        credits: raw.credits,
        offer: Requirements {
            scheme,
            network: raw.network,
            amount: raw.amount,
            asset: raw.asset,
            pay_to: raw.pay_to,
            max_timeout_seconds,
            extra: raw.extra,
        },
        v1_network: raw.v1_network,
    })
}

fn text(field: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.len() > MAX_DESCRIPTION || v.chars().any(char::is_control) => {
            Err(ConfigError(format!(
                "{field}: at most {MAX_DESCRIPTION} bytes, no control characters"
            )))
        }
        other => Ok(other),
    }
}

/// Validates the `payments` block.
pub fn compile(raw: Option<RawPayments>, env: Env) -> Result<Option<Payments>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let f = raw.facilitator;
    if !valid_cluster(&f.cluster) {
        return Err(ConfigError(format!(
            "payments.facilitator.cluster: {CLUSTER_RULE}"
        )));
    }
    let Some((authority, path)) = split_url(&f.url) else {
        return Err(ConfigError(format!(
            "payments.facilitator.url: `{}` must be an http(s) URL like \"https://facilitator.example.com/x402\"",
            f.url.chars().take(200).collect::<String>()
        )));
    };
    let (authority, base_path) = (
        authority.to_string(),
        path.trim_end_matches('/').to_string(),
    );
    let timeout_ms = match &f.timeout {
        None => DEFAULT_TIMEOUT_MS,
        Some(text) => match parse_ms(text) {
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => ms,
            _ => {
                return Err(ConfigError(format!(
                    "payments.facilitator.timeout: `{}` must be a duration up to 60s",
                    text.chars().take(64).collect::<String>()
                )))
            }
        },
    };
    let authorization = authorization(
        "payments.facilitator",
        f.authorization,
        f.authorization_env,
        env,
    )?;
    let url = raw.resource.url;
    if split_url(&url).is_none() || url.len() > crate::names::MAX_URL_LEN {
        return Err(ConfigError(
            "payments.resource.url: an http(s) URL: what the packs are sold for".into(),
        ));
    }
    let resource = Resource {
        url,
        description: text("payments.resource.description", raw.resource.description)?,
        mime_type: text("payments.resource.mime_type", raw.resource.mime_type)?,
    };
    if raw.packs.is_empty() || raw.packs.len() > MAX_PACKS {
        return Err(ConfigError(format!(
            "payments.packs: from 1 to {MAX_PACKS} packs"
        )));
    }
    let mut packs: Vec<Pack> = Vec::with_capacity(raw.packs.len());
    for (i, pack) in raw.packs.into_iter().enumerate() {
        let pack = compile_pack(i, pack, &packs)?;
        packs.push(pack);
    }
    let required_header = x402::encode(&x402::PaymentRequired {
        x402_version: 2,
        error: Some("quota spent: buy credits".into()),
        resource: resource.clone(),
        accepts: packs.iter().map(|p| p.offer.clone()).collect(),
    });
    let v1_body = x402::PaymentRequiredV1 {
        x402_version: 1,
        error: "quota spent: buy credits".into(),
        accepts: packs
            .iter()
            .filter_map(|p| {
                Some(RequirementsV1 {
                    scheme: p.offer.scheme.clone(),
                    network: p.v1_network.clone()?,
                    max_amount_required: p.offer.amount.clone(),
                    asset: p.offer.asset.clone(),
                    pay_to: p.offer.pay_to.clone(),
                    resource: resource.url.clone(),
                    description: resource.description.clone().unwrap_or_default(),
                    mime_type: resource.mime_type.clone(),
                    max_timeout_seconds: p.offer.max_timeout_seconds,
                    extra: p.offer.extra.clone(),
                })
            })
            .collect(),
    };
    let http_payment = match raw.http_payment {
        Some(raw) => Some(http_payment(raw, &packs, env)?),
        None => None,
    };
    let x402 = raw.x402.unwrap_or(true);
    if !x402 && http_payment.is_none() {
        return Err(ConfigError(
            "payments.x402: false leaves nothing to pay with: configure `http_payment`".into(),
        ));
    }
    let v1_body = if x402 {
        v1_body
    } else {
        x402::PaymentRequiredV1 {
            accepts: Vec::new(),
            ..v1_body
        }
    };
    Ok(Some(Payments {
        http_payment,
        x402,
        cluster: f.cluster,
        authority,
        base_path,
        timeout_ms,
        authorization,
        resource,
        packs,
        required_header,
        v1_body,
    }))
}
