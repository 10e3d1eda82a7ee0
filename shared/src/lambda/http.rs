//! API Gateway (HTTP API, payload 2.0) in front of [`Api`]: a gateway request becomes an
//! [`ApiRequest`] with the caller the gateway authenticated, and an [`ApiResponse`] becomes a
//! JSON response. Routing, authorization and every rule live in [`crate::api`].

use std::collections::BTreeMap;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::api::{Api, ApiRequest, ApiResponse, Caller};

pub use lambda_http::Error;

/// One request: translate, answer, translate back.
pub async fn handle(api: &Api, request: Request) -> Result<Response<Body>, Error> {
    let response = api
        .handle(&to_api_request(&request), chrono::Utc::now())
        .await;
    to_response(response)
}

/// Serves gateway requests with `api`, built once per container, until the runtime stops.
pub async fn serve(api: Api) -> Result<(), Error> {
    let api = std::sync::Arc::new(api);
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let api = api.clone();
        async move { handle(&api, request).await }
    }))
    .await
}

/// The parts of a gateway request the API looks at.
fn to_api_request(request: &Request) -> ApiRequest {
    let path = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    let query: BTreeMap<String, String> = request
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body = match request.body() {
        Body::Empty => None,
        other => Some(other.as_ref().to_vec()),
    };
    ApiRequest {
        method: request.method().as_str().to_owned(),
        path: path.to_owned(),
        query,
        body,
        caller: caller(request),
    }
}

/// Who the gateway says is calling: the JWT authorizer's claims, or the IAM principal.
fn caller(request: &Request) -> Caller {
    #[allow(irrefutable_let_patterns)]
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return Caller::Anonymous;
    };
    let Some(authorizer) = &context.authorizer else {
        return Caller::Anonymous;
    };
    if let Some(jwt) = &authorizer.jwt {
        let claims = &jwt.claims;
        let mut groups = Vec::new();
        // Either claim counts (the docs promise both); a refused one grants nothing.
        for name in GROUP_CLAIMS {
            let Some(value) = claims.get(name) else {
                continue;
            };
            match parse_groups(name, value) {
                Ok(found) => groups.extend(found),
                Err(why) => tracing::warn!(
                    claim = name,
                    value = %value,
                    "JWT groups claim refused, it grants no group: {why}"
                ),
            }
        }
        return Caller::Jwt {
            subject: claims.get("sub").cloned().unwrap_or_default(),
            groups,
        };
    }
    if let Some(iam) = &authorizer.iam {
        if let Some(principal) = iam.user_arn.clone().or_else(|| iam.caller_id.clone()) {
            return Caller::Iam { principal };
        }
    }
    Caller::Anonymous
}

/// The claims that may name the caller's groups: Cognito's, and the usual one of other
/// identity providers.
const GROUP_CLAIMS: [&str; 2] = ["cognito:groups", "groups"];

/// The groups a claim names, exactly, or why it cannot be read without guessing.
///
/// An HTTP API's JWT authorizer hands claims over as strings: a JSON array claim arrives
/// flattened to `[a b]` (elements joined by spaces), and a string claim as itself. So:
/// - JSON array text (`["admin","ops"]`): its elements.
/// - A flattened list: its space-separated elements, but only for `cognito:groups`, whose
///   group names cannot contain whitespace. Elsewhere a group may be named `not admin`, so a
///   flattened list of more than one element is ambiguous and refused.
/// - Any other string: one group, unless it holds whitespace or a comma (`Domain admin`,
///   `readonly,admin`: one group or several?), which is refused.
///
/// Refusing fails closed: the caller just lacks the groups of that claim.
fn parse_groups(claim: &str, value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(value) {
            return Ok(list);
        }
        if inner.trim().is_empty() {
            return Ok(Vec::new());
        }
        let elements: Vec<&str> = inner.split(' ').collect();
        if elements.iter().any(|e| e.is_empty()) {
            return Err(format!(
                "{value:?} has an empty element (a group name with leading, trailing or doubled spaces?)"
            ));
        }
        if elements.len() > 1 && claim != "cognito:groups" {
            return Err(format!(
                "{value:?} is a list flattened with spaces, and a {claim:?} group's name may contain spaces: \
                 it could be {} groups or fewer; send group names without spaces, or use a Cognito user pool",
                elements.len()
            ));
        }
        return Ok(elements.into_iter().map(str::to_owned).collect());
    }
    if value.is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(|c: char| c == ',' || c.is_whitespace()) {
        return Err(format!(
            "{value:?} holds a space or comma: one group so named, or a list? Send the claim as a JSON array"
        ));
    }
    Ok(vec![value.to_owned()])
}

fn to_response(response: ApiResponse) -> Result<Response<Body>, Error> {
    let mut builder = Response::builder().status(response.status);
    let body = match response.raw_body() {
        Some(raw) => raw.to_owned(),
        None => {
            builder = builder.header("content-type", "application/json");
            response.body.to_string()
        }
    };
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Body::from(body))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_claims_parse_exactly_in_every_shape() {
        fn cognito(v: &str) -> Result<Vec<String>, String> {
            parse_groups("cognito:groups", v)
        }
        fn other(v: &str) -> Result<Vec<String>, String> {
            parse_groups("groups", v)
        }
        for parse in [cognito, other] {
            assert_eq!(parse("[\"admin\",\"ops\"]").unwrap(), vec!["admin", "ops"]);
            assert_eq!(parse("[\"not admin\"]").unwrap(), vec!["not admin"]);
            assert_eq!(parse("[admin]").unwrap(), vec!["admin"]);
            assert_eq!(parse("admin").unwrap(), vec!["admin"]);
            assert!(parse("[]").unwrap().is_empty());
            assert!(parse("").unwrap().is_empty());
            assert_eq!(parse("[readonly,admin]").unwrap(), vec!["readonly,admin"]);
            for ambiguous in [
                "Domain admin",
                "readonly,admin",
                "admin,ops",
                "[admin  ops]",
            ] {
                let why = parse(ambiguous).unwrap_err();
                assert!(why.contains(ambiguous.trim()), "{why}");
            }
        }
        // Cognito group names cannot contain whitespace: its flattened lists split exactly.
        assert_eq!(cognito("[admin ops]").unwrap(), vec!["admin", "ops"]);
        // Other providers' can: `[not admin]` may be one group named "not admin".
        let why = other("[not admin]").unwrap_err();
        assert!(why.contains("may contain spaces"), "{why}");
        assert!(other("[admin ops]").is_err());
    }
}
