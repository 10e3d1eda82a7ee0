# The status API: an HTTP API in front of the status function. IAM authorization by default
# (callers sign requests with SigV4 and need execute-api:Invoke); with jwt_authorizer set,
# a JWT authorizer instead, and the function admits only members of admin_group.

locals {
  api_routes = [
    "GET /backups",
    "POST /backups",
    "GET /backups/{id}",
    "POST /backups/{id}/verify",
    "POST /backups/{id}/restore",
    "DELETE /backups/{id}",
    "GET /backups/{id}/download",
    "GET /status",
    "GET /audit",
    "GET /dashboard",
    "GET /restores",
    "GET /restores/{id}",
    "GET /runs/{id}",
  ]
  jwt = var.jwt_authorizer != null
}

resource "aws_apigatewayv2_api" "status" {
  name          = "${var.name}-status"
  description   = "pgkeep status API"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "status" {
  api_id                 = aws_apigatewayv2_api.status.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.function["status"].invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  count = local.jwt ? 1 : 0

  api_id           = aws_apigatewayv2_api.status.id
  name             = "${var.name}-jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_authorizer.issuer
    audience = var.jwt_authorizer.audiences
  }
}

resource "aws_apigatewayv2_route" "status" {
  for_each = toset(local.api_routes)

  api_id             = aws_apigatewayv2_api.status.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.status.id}"
  authorization_type = local.jwt ? "JWT" : "AWS_IAM"
  authorizer_id      = local.jwt ? aws_apigatewayv2_authorizer.jwt[0].id : null
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/${var.name}-status"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pgkeep.arn
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.status.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = 20
    throttling_rate_limit  = 10
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format = jsonencode({
      requestId   = "$context.requestId"
      ip          = "$context.identity.sourceIp"
      caller      = "$context.identity.caller"
      user        = "$context.identity.userArn"
      jwtSubject  = "$context.authorizer.claims.sub"
      requestTime = "$context.requestTime"
      routeKey    = "$context.routeKey"
      status      = "$context.status"
      error       = "$context.error.message"
      latency     = "$context.responseLatency"
    })
  }
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowStatusApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function["status"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.status.execution_arn}/*/*"
}
