"""The block-YAML reader's multi-line scalars (what `kubectl get -o yaml` writes for a long
message), checked against PyYAML as the oracle: whatever PyYAML writes, at any line width and
with any text, reads back to the same document; and nothing it is fed makes it raise anything
but its own one-line error."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.yamlish import YamlError, loads

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-_/", min_size=1, max_size=12).filter(
    lambda k: k[0].isalpha()
)
WORDY = st.lists(
    st.sampled_from(
        [
            *("pull", "image", '"q"', "'s'", "x509:", "a#b", " ", "  ", "\n", "\\", "é"),
            *("\xa0", "\u3000", "٣", "- ", ": ", "\t", "{", "[", "&", "*", "!", "|", ">"),
        ]
    ),
    max_size=40,
).map("".join)
# NEL, LS and PS are line breaks to PyYAML (YAML 1.1), which writes them raw inside quotes;
# to YAML 1.2 (kubectl's go-yaml, and this reader) they are characters like any other
TEXT = st.one_of(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85\u2028\u2029"),
        max_size=200,
    ),
    WORDY,
)
SCALARS = st.one_of(TEXT, st.integers(-(10**6), 10**6), st.booleans(), st.none())
DOCS = st.recursive(
    st.dictionaries(KEYS, SCALARS, max_size=4),
    lambda inner: st.one_of(
        st.dictionaries(KEYS, st.one_of(SCALARS, inner), max_size=4),
        st.lists(st.one_of(SCALARS, inner), max_size=4).map(lambda v: {"items": v}),
    ),
    max_leaves=12,
)


@settings(max_examples=800, deadline=None)
@given(DOCS, st.integers(10, 120), st.booleans())
def test_what_pyyaml_writes_reads_back(doc, width, unicode):
    text = yaml.safe_dump(doc, width=width, allow_unicode=unicode, default_flow_style=False)
    assert loads(text) == doc, text


@settings(max_examples=800, deadline=None)
@given(DOCS, st.integers(10, 60))
def test_damaged_documents_fail_with_one_line(doc, cut):
    text = yaml.safe_dump(doc, width=20)
    for broken in (text[:cut], text[cut:], text.replace("'", "", 1), text.replace('"', "", 1)):
        try:
            loads(broken)
        except YamlError as exc:
            assert "\n" not in str(exc)


KUBECTL = """apiVersion: v1
kind: Pod
status:
  containerStatuses:
  - image: registry.test/team/app:1.5
    state:
      waiting:
        message: 'rpc error: code = NotFound desc = failed to pull and unpack image
          "registry.test/team/app:1.5": failed to resolve reference "registry.test/team/app:1.5":
          registry.test/team/app:1.5: not found'
        reason: ErrImagePull
  - image: other
    state:
      waiting:
        message: Back-off pulling image
          "other"
        reason: "ImagePull\\
          BackOff"
"""


def test_kubectl_folded_messages():
    doc = loads(KUBECTL)
    first, second = doc["status"]["containerStatuses"]
    assert first["state"]["waiting"]["message"] == (
        'rpc error: code = NotFound desc = failed to pull and unpack image "registry.test/'
        'team/app:1.5": failed to resolve reference "registry.test/team/app:1.5": '
        "registry.test/team/app:1.5: not found"
    )
    assert second["state"]["waiting"] == {
        "message": 'Back-off pulling image "other"',
        "reason": "ImagePullBackOff",
    }
    assert doc == yaml.safe_load(KUBECTL)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: 'open\n  and never closed\n", "does not close"),
        ('a: "x\\q"\n', "escape"),
        ("a: plain\n  b: c\n", "mapping inside"),
        ("a: 'x' y\n", "unterminated"),
        ('a: "\\ud800"\n', "no character"),
    ],
)
def test_refusals_name_the_line(text, needle):
    with pytest.raises(YamlError, match=needle):
        loads(text)
