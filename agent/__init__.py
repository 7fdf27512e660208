"""The agent: grounded, cited answers from a chat model over the KB and the session's documents."""
