"""The command line's handlers, grouped by what they do: ``generation`` (run,
generate, chat, embed), ``models`` (pull, search, list, show, verify, copy, remove,
create), ``server`` (serve, deploy, stop-server, ps, stop, cache) and ``info`` (info,
catalog, config). Each handler is ``handler(cli: Cli) -> int``; ``context.Cli`` holds
what they share. ``entrypoints/cli.py`` holds the docstring (the one spec) and
dispatches."""
