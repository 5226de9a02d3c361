"""The ``insight`` command as a person meets it: arguments, config files, one-line errors."""

import yaml

from insight.cli import main, parser


def test_configfile_repeats_without_swallowing_the_image():
    args = parser().parse_args(
        ["explain", "--configfile", "a.yaml", "--configfile", "b.yaml", "image.jpg"]
    )
    assert args.configfile == ["a.yaml", "b.yaml"] and str(args.image) == "image.jpg"
    args = parser().parse_args(
        ["caption", "--scale", "house=0", "--scale", "tree=2", "image.jpg", "--family"]
    )
    assert args.scale == [("house", 0.0), ("tree", 2.0)] and args.family


def _write_config(tmp_path, cfg):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_explain_prints_the_label_and_files(tiny_run, tmp_path, monkeypatch, capsys):
    config = _write_config(tmp_path, tiny_run.config)
    monkeypatch.chdir(tmp_path)  # no config.yaml here: the config is run.yaml alone
    argv = ["explain", str(tiny_run.refs[0].path), "--label", "house"]
    argv += ["--configfile", str(config), "--results", str(tiny_run.results), "--out", "out"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("'house': score") and "wrote out/" in out


def test_errors_are_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = _write_config(tmp_path, tiny_run.config)
    (tmp_path / "notes.txt").write_text("not a picture")
    common = ["--configfile", str(good), "--results", str(tiny_run.results)]
    assert main(["explain", "notes.txt", "--label", "house", *common]) == 2
    assert capsys.readouterr().err == "insight explain: notes.txt: not an image\n"
    (tmp_path / "bad.yaml").write_text("sae:\n  k: many\n")
    assert main(["explain", "notes.txt", *common, "--configfile", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "insight explain: config key sae.k = 'many': must be of type integer\n"
