"""``steth federated``: partition a corpus into clinics, run a federation on this machine, run one clinic."""

from __future__ import annotations

import signal
import sys

import click


@click.group("federated")
def federated() -> None:
    """Federated training with Flower: clinics train together, recordings stay at each clinic (docs/federated.md)."""


@federated.command("partition")
@click.argument("corpus", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--by", "by", type=click.Choice(["source", "device", "site", "random"]), default="source",
              show_default=True, help="What makes a clinic: the corpus source, the recording device, the site, "
                                      "or patients dealt at random (stratified by label).")
@click.option("--clinics", "clinics", type=int, default=2, show_default=True, help="Number of clinics.")
@click.option("--holdout-fold", type=int, default=None,
              help="Put the patients of this fold of the corpus's own folds into OUT/heldout (scored, never trained on).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --by random.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUT that is not a partition.")
def partition(corpus, out, by, clinics, holdout_fold, seed, overwrite) -> None:
    """Write one corpus per clinic (OUT/clinic-1...), patient-disjoint, with a summary (OUT/partition.json)."""
    from steth_hub.federated.deploy import format_partition, partition_corpus

    summary = partition_corpus(corpus, out, by=by, clinics=clinics, holdout_fold=holdout_fold, seed=seed,
                               overwrite=overwrite)
    click.echo(format_partition(summary))


@federated.command("run")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="Experiment config (classifier, model, preset, recipe), as for steth train.")
@click.option("--clinics", "clinics", multiple=True, type=click.Path(file_okay=False),
              help="A clinic's corpus folder; give several after one --clinics (each runs here on 127.0.0.1).")
@click.option("--superlink", default=None,
              help="HOST:PORT of a SuperLink already running here, clinics elsewhere (steth federated clinic); "
                   "nothing else is started. Needs --min-clinics.")
@click.option("--root-certificates", type=click.Path(dir_okay=False), default=None,
              help="With --superlink: CA certificate of the SuperLink's TLS certificate (PEM).")
@click.option("--insecure", is_flag=True, help="With --superlink: no TLS (a trusted test network only).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Federated rounds.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--heldout", type=click.Path(file_okay=False), default=None,
              help="Corpus of held-out patients the server scores the global model on after every round.")
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--mu", "proximal_mu", type=float, default=0.01, show_default=True, help="FedProx proximal weight.")
@click.option("--min-clinics", type=int, default=None,
              help="Clinics needed per round (default: all); a round survives clinics lost above it.")
@click.option("--local-epochs", type=float, default=1.0, show_default=True, help="Epochs at each clinic per round.")
@click.option("--valid-fraction", type=float, default=0.2, show_default=True,
              help="Share of each clinic's patients kept for its validation metrics and threshold.")
@click.option("--dp-noise", type=float, default=0.0, show_default=True,
              help="Differential privacy: Gaussian noise multiplier (Flower's server-side fixed clipping); 0 = off.")
@click.option("--dp-clip", type=float, default=1.0, show_default=True, help="DP clipping norm of each update.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.argument("more_clinics", nargs=-1, type=click.Path(file_okay=False), metavar="")
@click.option("--resume", is_flag=True, help="Continue from the last global model saved (OUT.federated/).")
@click.option("--name", default=None, help="Model name written into steth.json.")
@click.option("--threads", type=int, default=None, help="Torch threads per process (default: torch's).")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds to wait for a round.")
def run(config, clinics, superlink, root_certificates, insecure, rounds, out, heldout, strategy, proximal_mu,
        min_clinics, local_epochs, valid_fraction, dp_noise, dp_clip, seed, more_clinics, resume, name, threads,
        timeout) -> None:
    """Run a federation on this machine: a SuperLink and one SuperNode per clinic on 127.0.0.1.

    Prints a line per round; stops every process it started; exits non-zero if no model was saved.
    """
    from steth_hub.federated.deploy import run_federation

    def _interrupt(signum, frame):  # a SIGTERM stops the processes like Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_federation(config, [*clinics, *more_clinics], rounds, out, heldout=heldout, strategy=strategy,
                                 proximal_mu=proximal_mu, min_clinics=min_clinics, local_epochs=local_epochs,
                                 valid_fraction=valid_fraction, dp_noise=dp_noise, dp_clip=dp_clip, seed=seed,
                                 resume=resume, name=name, threads=threads, timeout=timeout, echo=click.echo,
                                 superlink=superlink, root_certificates=root_certificates, insecure=insecure)
    except KeyboardInterrupt:
        click.echo("interrupted: every process the run started was stopped; --resume continues from the last "
                   "completed round", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"done in {summary['seconds']:.0f} s; {len(summary['stopped'])} process(es) stopped")


@federated.command("clinic")
@click.option("--superlink", required=True, help="HOST:PORT of the SuperLink.")
@click.option("--corpus", required=True, type=click.Path(file_okay=False), help="This clinic's corpus folder.")
@click.option("--root-certificates", type=click.Path(dir_okay=False), default=None,
              help="CA certificate of the SuperLink's TLS certificate (PEM).")
@click.option("--insecure", is_flag=True, help="No TLS (a trusted test network only).")
@click.option("--auth-private-key", type=click.Path(dir_okay=False), default=None,
              help="This clinic's private key (SuperNode authentication; the coordinator registers the public key "
                   "with `flwr supernode register`).")
@click.option("--threads", type=int, default=None, help="Torch threads for training.")
def clinic(superlink, corpus, root_certificates, insecure, auth_private_key, threads) -> None:
    """Run one clinic (a Flower SuperNode) against a SuperLink elsewhere, until stopped (Ctrl-C)."""
    from steth_hub.federated.deploy import run_clinic

    try:
        code = run_clinic(superlink, corpus, root_certificates=root_certificates, insecure=insecure,
                          auth_private_key=auth_private_key, threads=threads)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
