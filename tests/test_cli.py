"""The ``keras-visrec`` command: one vocabulary across sub-commands, no silent disappearance, quiet logs."""

import subprocess
import sys

import pytest

from keras_visrec import cli, cli_args


def test_a_command_whose_module_fails_to_import_is_listed_and_fails_loudly(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMAND_MODULES, "keras_visrec.no_such_module", ("ghost",))
    parser = cli.build_parser()
    assert "ghost" in parser.format_help() and "unavailable" in parser.format_help()
    assert cli.main(["ghost", "--anything", "x"]) == 2
    err = capsys.readouterr().err
    assert "keras-visrec ghost: unavailable" in err and "keras_visrec.no_such_module" in err


def test_every_command_is_registered():
    parser = cli.build_parser()
    help_text = parser.format_help()
    for commands in cli.COMMAND_MODULES.values():
        for command in commands:
            assert command in help_text
    assert "unavailable" not in help_text


def _options(command):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {option for action in sub._actions for option in action.option_strings if action.help != "==SUPPRESS=="}


@pytest.mark.parametrize("command", ["finetune", "eval", "export", "demo", "convert"])
def test_commands_share_one_vocabulary(command):
    options = _options(command)
    retired = {"--input-size", "--size", "--samples", "--limit", "--out", "--arch", "--backbone", "--representative",
               "--dataset", "--model"}
    assert not options & retired, sorted(options & retired)
    assert {"--verbose", "--quiet"} <= options


def test_old_spellings_still_work_and_say_what_replaces_them(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["export", "convnext_atto", "--input-size", "64", "--samples", "8", "--output", "x.tflite"])
    assert (args.image_size, args.max_examples) == (64, 8)
    err = capsys.readouterr().err
    assert "--input-size is deprecated" in err and "use --image-size" in err
    args = parser.parse_args(["finetune", "convnext_atto", "--data", "digits", "--output-dir", "r", "--strategy",
                              "default"])
    assert args.strategy == "none" and "use --strategy none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune", "convnext_atto", "--output-dir", "r", "--strategy", "mirorred"])
    assert "none, mirrored, multiworker" in capsys.readouterr().err


def test_positive_int_rejects_zero():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
        cli_args.positive_int("0")


def test_tensorflow_start_up_noise_is_silenced_unless_verbose():
    quiet = subprocess.run([sys.executable, "-m", "keras_visrec", "models", "convnext_atto"], capture_output=True,
                           text=True, check=True)
    assert "convnext_atto" in quiet.stdout
    assert "absl" not in quiet.stderr and "cuda" not in quiet.stderr.lower() and "oneDNN" not in quiet.stderr


def test_a_deprecated_flag_for_an_optional_positional_model_keeps_its_value(capsys):
    import argparse

    from keras_visrec.cli_args import add_model

    parser = argparse.ArgumentParser()
    add_model(parser, default="convnext_atto", deprecated=("--arch",))
    assert parser.parse_args([]).model == "convnext_atto"
    assert parser.parse_args(["convnext_tiny"]).model == "convnext_tiny"
    assert parser.parse_args(["--arch", "convnext_nano"]).model == "convnext_nano"
    assert "--arch is deprecated" in capsys.readouterr().err
