from promptapi.cli import main

raise SystemExit(main())
