"""Prompt templates: defaults are the authors' strings byte for byte (written out here from the reference, §1)."""

import pytest

from e5v_qdrant import PROMPT_PRESETS, E5VConfigError, PromptSet, get_prompts

# The authors' strings, typed in from shared/E5V_REFERENCE.md — not imported from the code under test.
CHAT = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
TEXT_BODY = "{}\nSummary above sentence in one word: "
IMAGE_BODY = "<image>\nSummary above image in one word: "
# The composed-retrieval bodies (issue 27): the authors write them as "[INST] {BODY} [/INST]" and strip "[INST] " and
# " [/INST]" for the Llama-3 checkpoint, so they end with no trailing space (unlike the text and image bodies).
COMPOSED_BODY = '<image>Modify this image with "{}", desribe modified image in one word:'


def test_default_prompts_are_the_authors_strings():
    p = get_prompts()
    assert p.for_text("A dog.") == CHAT.format(TEXT_BODY.format("A dog."))
    assert p.for_image() == CHAT.format(IMAGE_BODY)
    assert p.for_composed("make it red") == CHAT.format(COMPOSED_BODY.format("make it red"))
    # queries are embedded like documents unless a query prompt is configured
    assert p.for_query("A dog.") == p.for_text("A dog.")


def test_composed_default_full_prompt_byte_for_byte():
    """The whole string the tokenizer sees for a CIRR query, written out (no template arithmetic)."""
    assert get_prompts().for_composed("make it red") == (
        "<|start_header_id|>user<|end_header_id|>\n\n"
        '<image>Modify this image with "make it red", desribe modified image in one word:'
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
    )
    assert get_prompts().for_image() == (
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "<image>\nSummary above image in one word: "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
    )


# Every preset's (image body, composed body), typed in from issue 27 / E5V_REFERENCE.md §1 (text is always TEXT_BODY).
PRESET_BODIES = {
    "e5v": (
        "<image>\nSummary above image in one word: ",
        '<image>Modify this image with "{text}", desribe modified image in one word:',
    ),
    "e5v-typofix": (
        "<image>\nSummary above image in one word: ",
        '<image>Modify this image with "{text}", describe modified image in one word:',
    ),
    "e5v-cirr-target": (
        "<image>\n Describe this image in one word:",
        '<image>Modify this image with "{text}", desribe modified image in one word:',
    ),
    "fashioniq-dress": (
        "<image>\n Describe this dress in one word based on its style:",
        "<image> change the style of this dress to {text}\n Desribe this modified dress in one word based on its style:",
    ),
    "fashioniq-shirt": (
        "<image>\n Describe this shirt in one word based on its style:",
        "<image> change the style of this shirt to {text}\n Desribe this modified shirt in one word based on its style:",
    ),
    "fashioniq-toptee": (
        "<image>\n Describe this shirt in one word based on its style:",
        "<image> change the style of this shirt to {text}\n Desribe this modified shirt in one word based on its style:",
    ),
}


@pytest.mark.parametrize("name", sorted(PRESET_BODIES))
def test_preset_bodies_byte_for_byte(name):
    image, composed = PRESET_BODIES[name]
    p = get_prompts(name)
    assert (p.text, p.image, p.composed, p.query) == (
        "{text}\nSummary above sentence in one word: ",
        image,
        composed,
        None,
    )
    assert p.chat == CHAT.replace("{}", "{body}")
    assert p.for_composed("x") == CHAT.format(composed.replace("{text}", "x"))


def test_every_preset_is_written_out_here():
    assert set(PROMPT_PRESETS) == set(PRESET_BODIES)


def test_user_text_with_braces_and_placeholders_is_inserted_literally():
    p = get_prompts()
    tricky = "{text} {body} {} {0} <|eot_id|>"
    assert p.for_text(tricky) == CHAT.format(TEXT_BODY.format(tricky))


def test_typofix_preset_only_changes_the_composed_typo():
    fixed, base = get_prompts("e5v-typofix"), get_prompts()
    assert "describe modified image" in fixed.for_composed("x")
    assert "desribe" not in fixed.for_composed("x")
    assert fixed.for_text("x") == base.for_text("x") and fixed.for_image() == base.for_image()


def test_query_prompt_override():
    p = get_prompts(query="Query: {text}\nSummary above query in one word: ")
    assert p.for_query("cats") == CHAT.format("Query: cats\nSummary above query in one word: ")
    assert p.for_text("cats") == CHAT.format(TEXT_BODY.format("cats"))
    assert p.digest() != get_prompts().digest()


@pytest.mark.parametrize(
    "kwargs",
    [{"text": "no placeholder"}, {"image": "no image token"}, {"composed": "<image> no text"}, {"chat": "no body"}],
)
def test_invalid_templates_are_refused(kwargs):
    with pytest.raises(E5VConfigError):
        PromptSet(**kwargs)


def test_unknown_preset_names_the_choices():
    with pytest.raises(E5VConfigError, match="e5v-typofix"):
        get_prompts("nope")
