"""A workflow that handles secrets, for the redaction tests (imported by worker subprocesses too).

Canary values are planted where secrets travel: in a tool argument the model chooses (``passphrase``, declared
sensitive, and ``password``, secret by its name), in a tool result (``recovery_code``), and in an exception
message (``OpenVault`` quotes the run's ``vault_pin``). ``card_number`` lets approvers see its last four digits.
"""

from __future__ import annotations

from marshmallow import fields

import pipeline
from pipeline import Agent, Tool, Workflow, agent_step, parallel, step, tool_step

CANARY_ARG = "canary-arg-Q7X2V9"
CANARY_PASSWORD = "canary-password-M4K8T1"
CANARY_RESULT = "canary-result-P3N6R5"
CANARY_PIN = "canary-pin-Z9W4L2"
CARD = "4000123412344242"
CANARIES = (CANARY_ARG, CANARY_PASSWORD, CANARY_RESULT, CANARY_PIN, CARD)


class UnlockVault(Tool):
    description = "Unlock a customer's vault."
    approval_role = "vault_keeper"
    input_schema = {
        "account": fields.String(required=True),
        "passphrase": fields.String(required=True, metadata={"sensitive": True}),
        "password": fields.String(required=True),
        "card_number": pipeline.sensitive(fields.String(required=True), approvers="last4"),
    }
    output_schema = {
        "account": fields.String(required=True),
        "recovery_code": fields.String(required=True, metadata={"sensitive": True}),
    }

    def requires_approval(self, **input):
        return "Unlocking a vault needs a keeper."

    def call(self, *, account, passphrase, password, card_number):
        return {"account": account, "recovery_code": CANARY_RESULT}


class OpenVault(Tool):
    description = "Open the vault with its pin."
    input_schema = {"account": fields.String(required=True), "vault_pin": fields.String(required=True)}

    def call(self, *, account, vault_pin):
        raise RuntimeError(f"vault {account} refused pin {vault_pin}")


class VaultAgent(Agent):
    instructions = "Unlock the customer's vault."
    input_schema = {"account": fields.String(required=True)}
    output_schema = {"summary": fields.String(required=True)}
    tools = (UnlockVault,)
    model = "claude-haiku-4-5"


class VaultWorkflow(Workflow):
    input_schema = {
        "account": fields.String(required=True),
        "vault_pin": fields.String(required=True, metadata={"sensitive": True}),
    }
    unlock = agent_step(VaultAgent, input=lambda input, state, context: {"account": input["account"]})
    open_vault = tool_step(OpenVault)


def script() -> list[dict]:
    """The model's turns: call the tool with the secrets, then answer."""
    return [
        {
            "tool_uses": [
                (
                    "unlock_vault",
                    {"account": "acme", "passphrase": CANARY_ARG, "password": CANARY_PASSWORD, "card_number": CARD},
                )
            ]
        },
        {"tool_uses": [{"name": "final_answer", "input": {"summary": "unlocked"}}]},
    ]


class ExplodingWorkflow(Workflow):
    """A step that fails the run (launched by name in the Flower test; its input holds a canary)."""

    input_schema = {
        "sink": fields.String(required=True),
        "secret": fields.String(required=True, metadata={"sensitive": True}),
    }

    @step
    def explode(self):
        raise RuntimeError("the explode step always fails")


class Refuse(Tool):
    description = "Always refuses."
    input_schema = {"sink": fields.String(required=True)}

    def call(self, *, sink):
        raise RuntimeError("refused")


class Echo(Tool):
    description = "Echoes its sink."
    input_schema = {"sink": fields.String(required=True)}
    output_schema = {"sink": fields.String(required=True)}

    def call(self, *, sink):
        return {"sink": sink}


class ParallelExplodingWorkflow(Workflow):
    """A parallel group one of whose members fails the run (a chord member reporting the failure)."""

    input_schema = {"sink": fields.String(required=True)}
    checks = parallel(fine=tool_step(Echo), refused=tool_step(Refuse))

    @step
    def after(self):
        return {"never": True}
