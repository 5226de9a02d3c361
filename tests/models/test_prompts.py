"""Naming templates: the release's three sets by default, the project's and a user's file."""

import pytest

from insight.models.prompts import (
    PROJECT_TEMPLATES,
    RELEASE_TEMPLATES,
    naming_templates,
)

# The release's lists (cfm/method_utils.py), typed out here independently of the module.
RELEASE_NOUN = (
    "{} | a {} | the {} | one {} | a photo of a {} | a picture of a {} | a close view of a {} | "
    "an example of a {} | something called {} | a type of {}"
)
RELEASE_ADJECTIVE = (
    "{} | something that is {} | object that is {} | appearance that is {} | person that is {} | "
    "something that looks {} | someone that looks {} | a {} object | a {} thing | a {} person"
)
RELEASE_VERB = (
    "{} | to {} | someone who is {} | something that is {} | a person {} | a thing {} | "
    "a photo of someone {} | a photo of something {} | a picture of someone {} | "
    "a picture of something {}"
)


def test_default_templates_are_the_releases_three_sets_of_ten_string_for_string():
    expected = {
        "noun": tuple(RELEASE_NOUN.split(" | ")),
        "adjective": tuple(RELEASE_ADJECTIVE.split(" | ")),
        "verb": tuple(RELEASE_VERB.split(" | ")),
    }
    assert naming_templates("release") == expected == RELEASE_TEMPLATES
    # the paper's three examples are among them
    assert "a photo of a {}" in RELEASE_TEMPLATES["noun"]
    assert "something that is {}" in RELEASE_TEMPLATES["adjective"]
    assert "a photo of someone {}" in RELEASE_TEMPLATES["verb"]
    assert naming_templates("project") is PROJECT_TEMPLATES
    assert all(t.endswith(".") for ts in PROJECT_TEMPLATES.values() for t in ts)


def test_a_users_template_file_is_read_and_checked(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("noun: ['a {}', 'the {} here']\nscene: ['a view of {}']\n")
    assert naming_templates(str(path)) == {
        "noun": ("a {}", "the {} here"),
        "scene": ("a view of {}",),
    }
    path.write_text("noun: ['a {} and {}']\n")
    with pytest.raises(ValueError, match="needs exactly one"):
        naming_templates(str(path))
    path.write_text("noun: []\n")
    with pytest.raises(ValueError, match="non-empty list"):
        naming_templates(str(path))
    with pytest.raises(FileNotFoundError, match="neither release, project nor a file"):
        naming_templates(str(tmp_path / "absent.yaml"))
