"""The simulated ``helix`` CLI: ``helix spectask …`` (alias ``st``) with the real CLI's output.

This reproduces ``api/pkg/cli/spectask`` of helixml/helix at 68f96d7 (cobra v1.10.2, pflag
v1.0.10, gorilla/websocket v1.5.3) byte for byte where the harness reads it: ``start``,
``stream``, ``exec``, ``stop``, ``list``, ``screenshot`` and ``resume``. It talks to the
simulator's Helix API over real HTTP (requests) and a real WebSocket (``websockets``), reading
``HELIX_URL`` and ``HELIX_API_KEY`` as the Go code does, and it keeps the Go CLI's quirks:

- cobra's error path: stdout gets ``Error: <msg>``, the usage text, then ``<msg>`` again; exit 1;
- ``start`` prints the TASK id unless ``--wait``; a ``--wait`` timeout still exits 0;
- ``stream`` counts every 0x01 message (GOP replay included), ignores 0x31 StreamError, sends
  its init JSON with Go's sorted keys, prints the live block every 2 s (not with ``-v``), and
  exits 0 on duration, signal or a 1000 close even with zero frames;
- Go's ``%v`` of durations, ``formatBytes``/``formatBits``, and Go's error strings for HTTP
  and WebSocket failures.

Frames are parsed the way the Go CLI parses them (offsets, no validation), not with the strict
``protocols.stream`` core: a short or odd message must be counted exactly as the CLI counts it.
The built "binary" is a launcher written by the guest's ``go`` (:mod:`helix_sim.guest.go`);
``HELIX_CLI_ARGV0`` carries its path into the usage text, as ``os.Args[0]`` does in Go.

By job: :mod:`.cli` (entry point, ./.env), :mod:`.cobra` (flags, command tree, usage, error path),
:mod:`.commands` (the spectask tree), :mod:`.spectask` (the REST commands), :mod:`.stream` and
:mod:`.stream_stats` (the WebSocket stream and what it prints), :mod:`.http_client` (net/http and its
errors), :mod:`.timing` (the waits the simulator sets). Go's formatting is :mod:`helix_sim.gofmt`.
"""
