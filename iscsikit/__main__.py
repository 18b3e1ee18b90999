from iscsikit.cli.main import main

main()
