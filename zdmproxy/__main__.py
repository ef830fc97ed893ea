from zdmproxy.cli import main

raise SystemExit(main())
