"""`ditto-fast serve --ray`: the single-machine service (serving/app.py, the same protocol and
the same code) in front of session-engine replicas on a Ray Serve cluster.

    client ──WebSocket/HTTP──▶ Ray Serve proxy ──▶ Ingress replica (FastAPI: serving.app over a
                                                    ClusterEngine, engine.py)
                                                        │ DeploymentHandle, multiplexed by avatar id
                                                        ▼
                                                   EngineReplica (replica.py): a SessionEngine,
                                                    one per GPU (a CPU core set without one)
    SessionRelay (relay.py): one actor per application: avatar files by id, each live session's
    inbox of calls, its flow-control credit, and the replicas' latest figures.

A live session is one streaming call to one replica (its frames come back on it, so the replica
that holds the session is the one that answers); the session's calls (push, interrupt, controls,
end) travel through the relay, which the replica polls. Avatars are Ray Serve multiplexed
"models": a session goes preferably to a replica that holds its avatar, and a replica registers
an avatar at most once.

Nothing here is imported by the rest of the package: Ray is an optional dependency
(`pip install "ditto-fast[ray]"`).
"""
