"""``livecoach models train | eval | predict`` (registered by livecoach/cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

PREDICT_DETECTORS = ("sentiment", "intent", "abuse", "emotion_acknowledged", "identity_verification_asked",
                     "disclosure_given", "resolution_checked")


def _settings():
    from livecoach.settings import Settings

    return Settings()


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(stage: list[str] = typer.Option(["sentiment", "heads", "card"], "--stage",
                                               help="sentiment (LoRA fine-tune, ~20-25 min), heads (minutes), card "
                                                    "(eval + model card); repeat to pick several"),
              budget_min: float = typer.Option(25.0, help="Time budget of the sentiment fine-tune, in minutes"),
              epochs: float = typer.Option(2.0, help="Planned epochs of the sentiment fine-tune")) -> None:
        """Train the tier-0 heads from ../shared/data and write models/artefacts (+ MODEL_CARD.md)."""
        from livecoach.models.train import train as run

        bad = [s for s in stage if s not in ("sentiment", "heads", "card")]
        if bad:
            typer.echo(f"livecoach models train: unknown stage {bad[0]!r} (sentiment, heads, card)", err=True)
            raise typer.Exit(2)
        s = _settings()
        s.ensure_dirs()
        run(list(stage), s.cache_dir, budget_min=budget_min, epochs=epochs)

    @app.command("eval")
    def evaluate(precision: str = typer.Option("both", help="int8, fp32 or both"),
                 json_out: Path = typer.Option(None, "--json", help="Also write every figure as JSON here"),
                 card: bool = typer.Option(False, "--card", help="Rewrite models/artefacts/MODEL_CARD.md")) -> None:
        """Per-detector P/R/F1, confusion, ECE, beside VADER and TF-IDF+LR; hard cases; agent behaviours."""
        from livecoach.models.evaluate import evaluate_all, render, write_model_card

        precs = ("int8", "fp32") if precision == "both" else (precision,)
        if any(p not in ("int8", "fp32") for p in precs):
            typer.echo("livecoach models eval: --precision must be int8, fp32 or both", err=True)
            raise typer.Exit(2)
        s = _settings()
        s.ensure_dirs()
        rep = evaluate_all(s.cache_dir, precs, quick=True)
        typer.echo(render(rep))
        if json_out:
            json_out.write_text(json.dumps(rep, indent=1))
        if card:
            write_model_card(rep)

    @app.command("predict")
    def predict(detector: str = typer.Argument(..., help="sentiment | intent | abuse | an agent behaviour "
                                                         "(emotion_acknowledged, identity_verification_asked, "
                                                         "disclosure_given, resolution_checked)"),
                file: Path = typer.Argument(..., help="JSONL, one {\"text\": …} a line ('-': stdin); sentiment, "
                                                      "intent and abuse read a line as a customer turn, the "
                                                      "behaviours as an agent turn"),
                batch: int = typer.Option(64, help="Utterances per encoder call")) -> None:
        """Write one {"label", "confidence"} line per input line, in order."""
        if detector not in PREDICT_DETECTORS:
            typer.echo(f"livecoach models predict: unknown detector {detector!r}; choose one of "
                       f"{', '.join(PREDICT_DETECTORS)}", err=True)
            raise typer.Exit(2)
        fh = sys.stdin if str(file) == "-" else None
        try:
            lines = (fh or open(file, encoding="utf-8")).read().splitlines()
        except OSError as exc:
            typer.echo(f"livecoach models predict: {exc}", err=True)
            raise typer.Exit(2)
        rows = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                    raise ValueError('expected an object with a string "text"')
            except ValueError as exc:
                typer.echo(f"livecoach models predict: {file}:{n}: {exc}", err=True)
                raise typer.Exit(2)
            # tier 0 scores customer heads on customer turns and behaviours on agent turns only
            sp = "agent" if detector in PREDICT_DETECTORS[3:] else "customer"
            rows.append({"text": r["text"], "speaker": sp})
        from livecoach.signals._scoring import default_scorer, score_utterances

        scores = score_utterances(rows, scorer=default_scorer(_settings()), batch_size=batch)
        out = sys.stdout
        for sc in scores:
            if detector == "sentiment":
                rec = {"label": sc.sentiment, "confidence": sc.sentiment_probs.get(sc.sentiment, 1.0)}
            elif detector == "intent":
                rec = {"label": sc.intent, "confidence": sc.intent_probs.get(sc.intent, 1.0)}
            elif detector == "abuse":
                rec = {"label": "offensive" if sc.abuse >= 0.5 else "not_offensive",
                       "confidence": round(max(sc.abuse, 1 - sc.abuse), 4)}
            else:
                s = sc.behaviours.get(detector, 0.0)
                rec = {"label": "yes" if s >= 0.5 else "no", "confidence": round(max(s, 1 - s), 4)}
            out.write(json.dumps(rec) + "\n")
        out.flush()
