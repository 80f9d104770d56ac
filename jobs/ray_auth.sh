# Sourced by the submit scripts. Ray's token authentication: a client sends the token only in
# token mode, which cluster.yaml's nodes run in; turn it on when this machine has a token.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
  export RAY_AUTH_MODE=token
fi
