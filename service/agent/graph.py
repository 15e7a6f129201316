"""The agent graph's wiring — docs/architecture.md's diagram, and nothing else.

START → prepare ─┬─ valid ──────────────▶ train
                 └─ fails the sandbox ─▶ repair
train ──(job outcome)──▶ route_outcome
    ├─ code error ─────────▶ repair ──┐
    ├─ infrastructure ─────▶ retry ───┤
    └─ finished segment ──▶ assess ──▶ route_assessment
                              ├─ continue ─▶ continue_training ─▶ train
                              ├─ tune ──────▶ tune ─────┤
                              ├─ redesign ─▶ redesign ──┤
                              └─ finish ──▶ report ─▶ END
(repair | retry | tune | redesign) ─▶ [await_approval] ─▶ train   (or report if they gave up)
"""

from __future__ import annotations

from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, StateSnapshot

from service.agent import routers
from service.agent.deps import AgentDeps
from service.agent.nodes import AgentNodes
from service.agent.state import AgentState

#: the compiled graph: state, context (none), input and output are all ``AgentState``
CompiledAgentGraph = CompiledStateGraph[AgentState, None, AgentState, AgentState]


class AgentGraph(Protocol):
    """What the controller calls on the compiled graph (``CompiledAgentGraph`` has it all)."""

    def get_state(self, config: RunnableConfig) -> StateSnapshot: ...

    def invoke(
        self,
        input: AgentState | Command[Any] | None,
        config: RunnableConfig,
        *,
        durability: Durability,
    ) -> Any: ...


def build_graph(deps: AgentDeps, checkpointer: BaseCheckpointSaver[str]) -> CompiledAgentGraph:
    nodes = AgentNodes(deps)
    g = StateGraph(AgentState)
    g.add_node("prepare", nodes.prepare)
    g.add_node("train", nodes.train)
    g.add_node("assess", nodes.assess)
    g.add_node("continue_training", nodes.continue_training)
    g.add_node("tune", nodes.tune)
    g.add_node("redesign", nodes.redesign)
    g.add_node("repair", nodes.repair)
    g.add_node("retry", nodes.retry)
    g.add_node("await_approval", nodes.await_approval)
    g.add_node("report", nodes.report)

    g.add_edge(START, "prepare")
    g.add_conditional_edges("prepare", routers.route_prepared, ["train", "repair"])
    g.add_conditional_edges("train", routers.route_outcome, ["assess", "repair", "retry", "report"])
    g.add_conditional_edges(
        "assess", routers.route_assessment, ["continue_training", "tune", "redesign", "report"]
    )
    g.add_edge("continue_training", "train")
    for node in ("tune", "redesign", "repair", "retry"):
        g.add_conditional_edges(node, routers.route_fixed, ["train", "await_approval", "report"])
    g.add_conditional_edges(
        "await_approval", routers.route_approval, ["train", "tune", "redesign", "report"]
    )
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)


def thread_config(run_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 10_000}
