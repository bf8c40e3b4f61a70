"""The secrets corpus: one realistic, clearly synthetic sample per format the redactor knows.

Every secret is assembled at import time from harmless parts, so no token-shaped literal sits in the
repository for a secret scanner to report. `payload` is the part that must never appear in any output
(a prefix such as `sk-ant-api03-` alone is no secret); `kind` is the label the redacted text must carry.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

__all__ = ["CORPUS", "Sample"]


@dataclass(frozen=True)
class Sample:
    kind: str
    text: str
    """A line as a provider, a tool or a shell would print it, with the secret inside."""
    payload: str


def _fill(stem: str, n: int, alphabet: str = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz") -> str:
    """A deterministic, visibly fake run of `n` characters that starts with `stem`."""
    out = stem
    i = 0
    while len(out) < n:
        out += alphabet[(i * 7 + len(stem)) % len(alphabet)]
        i += 1
    return out[:n]


_ANTHROPIC = _fill("FAKEanthropicTESTKEY", 93, alphabet="abcdefXYZ0123456789_-")
_OPENAI = _fill("FAKEopenaiTESTKEY", 24) + "T3Blbk" + "FJ" + _fill("FAKEopenaiTAIL", 24)
_GITHUB = _fill("FAKEgithubTOKEN", 36)
_GITLAB = _fill("FAKEgitlabTOKEN", 20)
_SLACK = "1234567890-0987654321-" + _fill("FAKEslackTOKEN", 24).lower()
_AWS_ID = _fill("FAKEAWSKEY", 16, alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567").upper()
_AWS_SECRET = _fill("FAKEawsSECRETkey", 40, alphabet="abcdefghijABCDEFGHIJ0123456789+/")
_GOOGLE = _fill("FAKEgoogleAPIkey", 35)
_STRIPE = _fill("FAKEstripeKEY", 24)
_JWT = ".".join(
    base64.urlsafe_b64encode(part.encode()).decode().rstrip("=")
    for part in ('{"alg":"HS256","typ":"JWT"}', '{"sub":"fake-user-0001","name":"Test Only"}', "fake-signature-0001")
)
_BEARER = _fill("FAKEopaqueBEARER7", 40)
_BASIC_PASSWORD = "FAKEbasicPASS9"
_URL_PASSWORD = "FAKEdbPASSWORD42"
_PASSWORD = "FAKEpairPASSWORD77"
_TOKEN = "FAKEpairTOKEN0815"
_SECRET = "FAKEclientSECRET4711"
_PEM_BODY = "\n".join(_fill(f"FAKEpemLINE{i}", 64) for i in range(4))
_PEM = "-----BEGIN " + "RSA PRIVATE KEY-----\n" + _PEM_BODY + "\n-----END " + "RSA PRIVATE KEY-----"

CORPUS: tuple[Sample, ...] = (
    Sample("anthropic-key", "provider refused Authorization: Bearer sk-ant-api03-" + _ANTHROPIC, _ANTHROPIC),
    Sample("openai-key", "401 from provider: invalid x-api-key sk-proj-" + _OPENAI, _OPENAI),
    Sample("github-token",
           f"git push https://x-access-token:ghp_{_GITHUB}@github.com/acme/app.git failed: exit 128", _GITHUB),
    Sample("gitlab-token", f"PRIVATE-TOKEN header was glpat-{_GITLAB} (rejected)", _GITLAB),
    Sample("slack-token", f"slack post failed with xoxb-{_SLACK}: channel_not_found", _SLACK),
    Sample("aws-access-key", f"S3 denied for AKIA{_AWS_ID}: AccessDenied", _AWS_ID),
    Sample("aws-secret-key", f"export AWS_SECRET_ACCESS_KEY={_AWS_SECRET}", _AWS_SECRET),
    Sample("google-api-key", f"GET https://maps.example/api?address=x&k=AIza{_GOOGLE} -> 403", _GOOGLE),
    Sample("stripe-key", f"stripe.api_key = 'sk_live_{_STRIPE}'", _STRIPE),
    Sample("jwt", f"session cookie {_JWT} expired", _JWT.split(".")[1]),
    Sample("bearer-token", f"curl -H 'Authorization: Bearer {_BEARER}' https://api.example", _BEARER),
    Sample("basic-auth",
           "Authorization: Basic " + base64.b64encode(f"deploy:{_BASIC_PASSWORD}".encode()).decode(),
           base64.b64encode(f"deploy:{_BASIC_PASSWORD}".encode()).decode()),
    Sample("url-credentials", f"connecting to postgres://app:{_URL_PASSWORD}@db.internal:5432/app", _URL_PASSWORD),
    Sample("password", f"login failed for user=admin password={_PASSWORD}", _PASSWORD),
    Sample("token", f'{{"ok": false, "refresh_token": "{_TOKEN}"}}', _TOKEN),
    Sample("secret", f"oauth config client_secret: {_SECRET}", _SECRET),
    Sample("private-key", "read key file:\n" + _PEM + "\nthen exited", _PEM_BODY.splitlines()[1]),
)
