from aircall_sync.cli import main

main()
