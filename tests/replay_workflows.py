"""A researching agent for the replay tests: a lookup without side effects and a side-effecting notification
that appends a line to the file named by ``RUBOT_TEST_SINK`` every time its body really runs."""

from __future__ import annotations

import os
from pathlib import Path

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step, step, tool_step


class Search(Tool):
    description = "Search the notes for a topic."
    input_schema = {"topic": fields.String(required=True)}
    output_schema = {"topic": fields.String(required=True), "hits": fields.Integer(required=True)}

    def call(self, *, topic):
        return {"topic": topic, "hits": len(topic)}


class Notify(Tool):
    description = "Tell the team something (sends a message: a side effect)."
    side_effects = True
    input_schema = {"message": fields.String(required=True)}
    output_schema = {"sent": fields.String(required=True)}

    def call(self, *, message):
        with Path(os.environ["RUBOT_TEST_SINK"]).open("a") as handle:
            handle.write(f"notify {message}\n")
        return {"sent": message}


class Brief(Tool):
    description = "Prepare the research brief."
    input_schema = {"topic": fields.String(required=True)}
    output_schema = {"topic": fields.String(required=True)}

    def call(self, *, topic):
        return {"topic": topic.strip()}


class Researcher(Agent):
    instructions = "Research the topic with the tools, telling the team as you go, then answer."
    input_schema = {"topic": fields.String(required=True)}
    output_schema = {"finding": fields.String(required=True)}
    tools = (Search, Notify)
    model = "claude-haiku-4-5"
    max_turns = 8


class ResearchWorkflow(Workflow):
    input_schema = {"topic": fields.String(required=True)}
    brief = tool_step(Brief, input=lambda input, state, context: {"topic": input["topic"]})
    research = agent_step(Researcher, input=lambda input, state, context: state["brief"])

    @step
    def report(self):
        return {"finding": self.run.state["research"]["finding"], "topic": self.run.state["brief"]["topic"]}
