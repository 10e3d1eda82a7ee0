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
        let groups = claims
            .get("cognito:groups")
            .or_else(|| claims.get("groups"))
            .map(|g| parse_groups(g))
            .unwrap_or_default();
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

/// HTTP APIs flatten a JWT's array claim to text like `[admin ops]`; a plain string claim may
/// hold one group or a comma-separated list.
fn parse_groups(claim: &str) -> Vec<String> {
    claim
        .trim_matches(|c| c == '[' || c == ']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|g| g.trim_matches('"'))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

fn to_response(response: ApiResponse) -> Result<Response<Body>, Error> {
    let mut builder = Response::builder()
        .status(response.status)
        .header("content-type", "application/json");
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Body::from(response.body.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_claims_parse_in_every_shape() {
        assert_eq!(parse_groups("[admin ops]"), vec!["admin", "ops"]);
        assert_eq!(parse_groups("admin,ops"), vec!["admin", "ops"]);
        assert_eq!(parse_groups("[\"admin\",\"ops\"]"), vec!["admin", "ops"]);
        assert!(parse_groups("[]").is_empty());
    }
}
