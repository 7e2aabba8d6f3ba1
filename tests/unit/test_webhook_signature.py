"""The webhook's signature: the README's receiver snippet agrees with what the service sends."""

from __future__ import annotations

import re
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from service.reviews.webhook import sign, verify

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = b"whsec-example-0123456789"


def readme_verify():
    code = re.search(r"```python\n(import hashlib.*?)```", README.read_text(), re.S)
    assert code is not None, "the README shows how to verify a signature"
    namespace: dict = {}
    exec(code.group(1), namespace)
    return namespace["verify"]


def test_the_readme_example_signature_is_the_bodys():
    text = README.read_text()
    body = re.search(r"\n(\{\"type\":\"review.closed\".*?\})\n", text).group(1).encode()
    header = re.search(r"X-Riskscore-Signature: (\S+)", text).group(1)
    assert sign(SECRET, body, 1796652189) == header
    assert verify(SECRET, body, header, now=1796652189)


@given(body=st.binary(max_size=300), header=st.text(max_size=80))
def test_the_readme_snippet_accepts_what_the_service_signs_and_nothing_else(body, header):
    check = readme_verify()
    now = int(time.time())
    signed = sign(SECRET, body, now)
    assert check(SECRET, body, signed) and verify(SECRET, body, signed)
    assert not check(SECRET, body + b"!", signed)
    assert not check(b"another-secret-0000000", body, signed)
    assert check(SECRET, body, header) is verify(SECRET, body, header)  # never raises
