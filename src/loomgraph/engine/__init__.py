"""Running a graph: the interpreter, the node-facing context, journaled effects and the tool
gate. It knows no concrete backend and no node kind by name."""
